"""Clear a task's declared outputs before its command runs, as Bazel does: files left by an
earlier version of the task, or by a restore or a run that was killed, are then never recorded
as outputs of this run, and an output hardlinked to a cache blob (`restore = "hardlink"`) is
unlinked before the command can write through it into the blob.

A declared file (or symlink) is removed; a declared folder is removed whole and made again,
empty, with its old permissions. Nothing is followed: a declared output that is a symlink loses
the link, never its target's contents, and links inside a folder are removed as links. A declared
output whose parent folders lead through a symlink (`ext/gen` with `ext -> /elsewhere`, or
`data/gen` with `data -> src`) is left alone: clearing it would delete what lies at the link's
target, outside the workspace or among the task's sources. An output holding an input or the
task's working folder is left alone too, also when the input is named through a symlinked folder;
its temp files of a killed restore are still removed, and with `unshare` its files that have other
hard links (a cache blob's, after a hardlink restore) are replaced by private copies first, so
that a command rewriting one never writes into the blob.
"""

from __future__ import annotations

import os
import stat


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder + os.sep)


# why clear_outputs left a declared output alone
HOLDS_A_SOURCE = "is or holds one of the task's inputs or its working folder"
LINKED_PARENT = "lies under a symlinked folder"


def clear_outputs(root: str, declared_outputs: list[str], keep: list[str],
                  unshare: bool = False) -> list[tuple[str, str]]:
    """Remove each declared output under `root` (workspace-relative, normalised), except one that
    holds a path of `keep` (the task's working folder and input files: those are sources, never
    cleared) and one reached through a symlinked folder. Returns (output, why) for each declared
    output left alone (HOLDS_A_SOURCE or LINKED_PARENT); one left alone for HOLDS_A_SOURCE still
    loses the temp files of a killed restore, and with `unshare` (the workspace restores by
    hardlink) its files that have other hard links become private copies. Raises OSError when one cannot be removed or copied."""
    spared: list[tuple[str, str]] = []
    real_root = os.path.realpath(root)
    real_folders: dict[str, str] = {}

    def real_folder(folder: str) -> str:
        # a folder's real path, once per folder: inputs share few folders
        if folder not in real_folders:
            real_folders[folder] = os.path.realpath(folder)
        return real_folders[folder]

    for rel in declared_outputs:
        path = os.path.join(root, rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        # with no symlink among its parents, the output's real path is the lexical one
        if real_folder(os.path.dirname(path)) != os.path.dirname(os.path.join(real_root, rel)):
            spared.append((rel, LINKED_PARENT))
            continue
        real_path = os.path.join(real_root, rel)
        if any(_under(kept, path) or _under(os.path.join(real_folder(os.path.dirname(kept)),
                                                         os.path.basename(kept)), real_path)
               for kept in keep):
            spared.append((rel, HOLDS_A_SOURCE))
            _tidy_spared(path, st, unshare)
            continue
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
            continue
        _remove_tree(path)
        os.mkdir(path)
        os.chmod(path, stat.S_IMODE(st.st_mode))
    return spared


def _is_nxrun_temp(name: str) -> bool:
    """A temp file of a restore (or of _private_copy): `.nxrun-<24 hex digits>.tmp`."""
    return len(name) == 35 and name.startswith(".nxrun-") and name.endswith(".tmp") and \
        all(c in "0123456789abcdef" for c in name[7:31])


def _tidy_spared(path: str, st: os.stat_result, unshare: bool) -> None:
    """In an output left alone because it holds sources: remove the temp files a killed restore
    left (else the run would record them as outputs), and with `unshare` replace each regular file
    that has other hard links with a copy of its own (same content and mode). Never follows a
    link."""
    if stat.S_ISREG(st.st_mode):
        if unshare and st.st_nlink > 1:
            _private_copy(path, st)
        return
    if not stat.S_ISDIR(st.st_mode):
        return
    for folder, _dirs, files in os.walk(path):   # os.walk does not follow links to folders
        for name in files:
            file_path = os.path.join(folder, name)
            if _is_nxrun_temp(name):
                os.unlink(file_path)
                continue
            if unshare:
                file_st = os.lstat(file_path)
                if stat.S_ISREG(file_st.st_mode) and file_st.st_nlink > 1:
                    _private_copy(file_path, file_st)


def _private_copy(path: str, st: os.stat_result) -> None:
    import shutil

    temp = os.path.join(os.path.dirname(path), f".nxrun-{os.urandom(12).hex()}.tmp")
    try:
        shutil.copyfile(path, temp)
        os.chmod(temp, stat.S_IMODE(st.st_mode))
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def _remove_tree(path: str) -> None:
    """shutil.rmtree (which never follows links), making a folder writable and readable by its
    owner when one refuses to be emptied."""
    import shutil

    retried: set[str] = set()

    def make_writable_and_retry(function, failed_path, exc_info):
        if not isinstance(exc_info[1], PermissionError) or failed_path in retried:
            raise exc_info[1]
        retried.add(failed_path)
        for folder in (os.path.dirname(failed_path), failed_path):
            folder_st = os.lstat(folder)
            if stat.S_ISDIR(folder_st.st_mode):
                os.chmod(folder, stat.S_IMODE(folder_st.st_mode) | stat.S_IRWXU)
        if stat.S_ISDIR(os.lstat(failed_path).st_mode):
            shutil.rmtree(failed_path, onerror=make_writable_and_retry)
        else:
            function(failed_path)

    shutil.rmtree(path, onerror=make_writable_and_retry)
