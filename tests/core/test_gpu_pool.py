"""The GPU slot pool (nxrun/run/gpus.py): which GPUs it holds, taking and giving back, what a
granted command sees. nvidia-smi is a stand-in script (tests/fake_nvidia_smi.py)."""

from __future__ import annotations

import threading

import pytest
from fake_nvidia_smi import A100, H100, install, uuid_of

from nxrun.errors import ConfigError, NxrunError
from nxrun.run import gpus
from nxrun.run.gpus import GpuPool, GpuSetting, Inventory, build_pool, choose_setting, parse_setting, pool_from


@pytest.fixture
def two_models(tmp_path, monkeypatch) -> Inventory:
    monkeypatch.setenv("PATH", install(tmp_path / "bin", [H100, H100, A100])["PATH"])
    return gpus.query_inventory()


def test_inventory_reads_index_uuid_and_a_fingerprint_without_either(two_models):
    assert [g.index for g in two_models.gpus] == ["0", "1", "2"]
    assert [g.uuid for g in two_models.gpus] == [uuid_of(0), uuid_of(1), uuid_of(2)]
    first, second, third = (g.fingerprint for g in two_models.gpus)
    assert first == second != third
    assert "H100" in first and "9.0" in first and "580.95.05" in first and "cuda 13.0" in first
    assert uuid_of(0) not in first and not first.startswith("0,")


def test_no_nvidia_smi_is_an_empty_inventory(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpus.query_inventory().gpus == []


def test_auto_pool_is_every_gpu_by_uuid(two_models):
    pool = build_pool(GpuSetting("auto", "auto"), two_models, None)
    assert pool.ids == [uuid_of(0), uuid_of(1), uuid_of(2)]
    env = pool.env_for([uuid_of(1)])
    assert env["CUDA_VISIBLE_DEVICES"] == uuid_of(1) and env["NXRUN_GPU_IDS"] == uuid_of(1)
    assert "CUDA_DEVICE_ORDER" not in env


def test_auto_pool_keeps_to_cuda_visible_devices_of_nxrun(two_models):
    pool = build_pool(GpuSetting("auto", "auto"), two_models, "2,0")
    assert pool.ids == [uuid_of(2), uuid_of(0)]
    assert build_pool(GpuSetting("auto", "auto"), two_models, "").ids == []


def test_pool_given_by_indices_exports_indices_in_pci_order(two_models):
    pool = build_pool(parse_setting("0,2", "--gpus"), two_models, None)
    assert pool.ids == ["0", "2"] and pool.by_index
    env = pool.env_for(["2"])
    assert env == {"NXRUN_GPU_IDS": "2", "CUDA_VISIBLE_DEVICES": "2", "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                   "NXRUN_GPU_UUIDS": uuid_of(2)}


def test_pool_given_by_uuid_exports_uuids(two_models):
    pool = build_pool(parse_setting(uuid_of(1), "NXRUN_GPUS"), two_models, None)
    assert pool.env_for([uuid_of(1)])["CUDA_VISIBLE_DEVICES"] == uuid_of(1)


def test_a_count_takes_the_first_gpus_and_more_than_there_are_is_an_error(two_models):
    assert build_pool(GpuSetting(2, "nxrun.toml:3"), two_models, None).ids == [uuid_of(0), uuid_of(1)]
    with pytest.raises(NxrunError, match=r"nxrun.toml:3: gpus = 4, but this machine shows 3 usable GPUs"):
        build_pool(GpuSetting(4, "nxrun.toml:3"), two_models, None)


def test_an_id_not_on_the_machine_is_an_error_naming_where_it_was_set(two_models):
    with pytest.raises(NxrunError, match=r"NXRUN_GPUS: GPU '7' is not on this machine"):
        build_pool(parse_setting("0,7", "NXRUN_GPUS"), two_models, None)


def test_a_pool_declared_without_hardware_takes_the_ids_as_given():
    pool = build_pool(parse_setting("0,1", "NXRUN_GPUS"), Inventory([]), None)
    assert pool.ids == ["0", "1"] and pool.size == 2 and not pool.deviceless
    assert pool.env_for(["1"]) == {"NXRUN_GPU_IDS": "1", "CUDA_VISIBLE_DEVICES": "1",
                                   "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert build_pool(GpuSetting(3, "nxrun.toml:2"), Inventory([]), None).ids == ["0", "1", "2"]


def test_auto_without_a_gpu_is_one_slot_without_a_device():
    pool = build_pool(GpuSetting("auto", "auto"), Inventory([]), None)
    assert pool.deviceless and not pool.too_many(8)
    assert pool.try_take(2) == []
    assert pool.try_take(1) is None          # one task at a time, as the `gpu` mutex was
    assert pool.env_for([]) == {}
    pool.give_back([])
    assert pool.try_take(1) == []


@pytest.mark.parametrize("value, problem", [
    ("0,,1", "empty GPU id"), ("0,0", "names a GPU twice"), ("gpu0", "neither an nvidia-smi index nor a UUID"),
    (0, "must be at least 1"), (True, "is not a GPU setting"), ([0, 1], "as strings"), ({"a": 1}, "not a GPU"),
])
def test_bad_settings_name_where_and_the_fix(value, problem):
    with pytest.raises(ConfigError, match=problem) as caught:
        parse_setting(value, "nxrun.toml:4")
    assert str(caught.value).startswith("nxrun.toml:4: ")


def test_precedence_is_cli_then_environment_then_workspace_then_auto():
    workspace = GpuSetting(["3"], "nxrun.toml:2")
    def chosen(*args):
        setting = choose_setting(*args)
        return setting.value, setting.source

    assert chosen("0", {"NXRUN_GPUS": "1"}, workspace) == (["0"], "--gpus")
    assert chosen(None, {"NXRUN_GPUS": "1"}, workspace) == (["1"], "NXRUN_GPUS")
    assert choose_setting(None, {"NXRUN_GPUS": " "}, workspace) is workspace
    assert chosen(None, {}, None) == ("auto", "auto")
    assert pool_from("auto", workspace, {"NXRUN_GPUS": "1"}, Inventory([])).deviceless


def test_take_and_give_back():
    pool = build_pool(parse_setting("0,1,2", "NXRUN_GPUS"), Inventory([]), None)
    first = pool.try_take(2)
    assert first == ["0", "1"]
    assert pool.try_take(2) is None and pool.free_count() == 1
    assert pool.try_take(1) == ["2"]
    pool.give_back(["1"])
    assert pool.try_take(1) == ["1"]
    with pytest.raises(ValueError, match="twice"):
        pool.give_back(["2"]) or pool.give_back(["2"])
    assert pool.too_many(4) and not pool.too_many(3)
    assert pool.try_take(0) == []


def test_a_multi_gpu_grant_is_of_one_class_and_a_class_can_be_asked_for(two_models):
    pool = build_pool(GpuSetting("auto", "auto"), two_models, None)
    h100, a100 = pool.classes(1)
    assert pool.classes(2) == [h100]
    assert pool.try_take(1, fingerprint=a100) == [uuid_of(2)]
    assert pool.try_take(1, fingerprint=a100) is None
    assert pool.try_take(2) == [uuid_of(0), uuid_of(1)]
    pool.give_back([uuid_of(0), uuid_of(2)])
    assert pool.try_take(2) is None          # one H100 and one A100 free: never mixed
    assert pool.fingerprint_of([uuid_of(0)]) == h100


def test_concurrent_takers_never_share_a_gpu():
    pool = GpuPool([gpus.Gpu(str(n), str(n), None, "") for n in range(4)], by_index=True)
    held: list[str] = []
    lock = threading.Lock()
    clashes: list[str] = []

    def worker() -> None:
        for _ in range(300):
            taken = pool.try_take(2)
            if taken is None:
                continue
            with lock:
                clashes.extend(g for g in taken if g in held)
                held.extend(taken)
            with lock:
                for g in taken:
                    held.remove(g)
            pool.give_back(taken)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert clashes == [] and pool.free_count() == 4


def test_a_request_larger_than_the_pool_names_the_task_and_the_pool():
    from nxrun.graph import Task

    def task(task_id: str, count: int) -> Task:
        return Task(id=task_id, project="p", target="t", matrix={}, command="x", inputs=[], outputs=[], deps=[],
                    env={}, resources=[], cache="always", cwd=".", source="nxrun.toml:7", gpus=count)

    pool = build_pool(parse_setting("0,1", "NXRUN_GPUS"), Inventory([]), None)
    gpus.check_requests(pool, [task("p:a", 2), task("p:b", 0)])
    with pytest.raises(NxrunError, match=r"p:big asks for 3 GPUs \(nxrun.toml:7\), but the GPU pool has 2: "
                                         r"set by NXRUN_GPUS \(0, 1\)"):
        gpus.check_requests(pool, [task("p:a", 1), task("p:big", 3)])
    deviceless = build_pool(GpuSetting("auto", "auto"), Inventory([]), None)
    gpus.check_requests(deviceless, [task("p:big", 3)])


def test_a_hardware_task_prefers_a_cached_class_then_the_freest(two_models):
    pool = build_pool(GpuSetting("auto", "auto"), two_models, None)
    h100, a100 = pool.classes(1)
    assert gpus.choose_class(pool, 1, lambda c: c == a100) == a100
    assert gpus.choose_class(pool, 1, lambda c: False) == h100        # two H100s free, one A100
    pool.try_take(2, fingerprint=h100)
    assert gpus.choose_class(pool, 1, lambda c: False) == a100
    assert gpus.choose_class(pool, 2, lambda c: False) == h100        # only the H100s come in twos
    single = build_pool(parse_setting("0,1", "NXRUN_GPUS"), Inventory([]), None)
    assert gpus.choose_class(single, 1, lambda c: True) is None        # no fingerprints: nothing to choose
