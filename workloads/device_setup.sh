# Sourced by the device-call scripts (gpu_check.sh, gpu_scaling.sh, serving/gpu_round.sh): install nxrun
# without the network, from the repository and the wheels carried in .whl/ (sqlite-utils and boto3 are not
# on the GPU image), and put the interpreter that has cupy and torch on PATH as `python`, the name task
# commands use. Expects PY (the interpreter) to be set; exits the calling script if the install fails.
export PYTHONUNBUFFERED=1 NO_COLOR=1
if [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
$PY -m pip install -q --no-deps --no-build-isolation -e . > /tmp/nxrun-install.log 2>&1 || { cat /tmp/nxrun-install.log; exit 1; }
mkdir -p /tmp/bin && ln -sf "$(command -v $PY)" /tmp/bin/python && export PATH=/tmp/bin:$PATH
