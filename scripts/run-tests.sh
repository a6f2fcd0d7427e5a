#!/usr/bin/env bash
# Run hpcseg's test suite (what `make test` calls). Arguments go to pytest.
#
# 1. Bring up the local Slurm cluster (scripts/local-slurm.sh up; a no-op taking well under a second when it
#    already runs). On success HPCSEG_SLURM=1 is exported and the tests marked `slurm` run against it.
#    On failure: with CI=true the run stops here, loudly, with a non-zero exit; elsewhere
#    HPCSEG_SLURM_SKIP_REASON is exported and the `slurm` tests are skipped with that reason.
# 2. Headless Chromium (scripts/browser.sh up) for the report's browser test; CI=true fails without it.
#    Charliecloud's tools (singularity/charliecloud/build.sh --tools: apt-get when missing).
# 3. pytest from the repository root, in two processes (pytest-xdist; HPCSEG_TEST_WORKERS); its exit
#    status is ours, except that 5 (no tests collected) is a failure too.
#
# The cluster is left running afterwards on purpose: the next run starts in well under a second instead of
# ~10 s, and tests can be rerun one at a time. `make cluster-down` (scripts/local-slurm.sh down) stops it.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
PY=${PY:-$ROOT/.venv/bin/python}

unset HPCSEG_SLURM HPCSEG_SLURM_SKIP_REASON
if [ "${HPCSEG_NO_SLURM:-}" = 1 ]; then
    export HPCSEG_SLURM_SKIP_REASON="HPCSEG_NO_SLURM=1: local Slurm cluster not started on request"
    echo "run-tests: $HPCSEG_SLURM_SKIP_REASON" >&2
else
    cluster_log=$(mktemp)
    if bash "$ROOT/scripts/local-slurm.sh" up >"$cluster_log" 2>&1; then
        cat "$cluster_log"
        export HPCSEG_SLURM=1
    else
        rc=$?
        why=$(grep -m1 'FAILED' "$cluster_log" || tail -n 1 "$cluster_log")
        if [ "${CI:-}" = true ]; then
            {
                echo "################################################################################"
                echo "run-tests: the local Slurm cluster did not start (exit $rc) and CI=true: failing."
                echo "################################################################################"
                cat "$cluster_log"
            } >&2
            rm -f "$cluster_log"
            exit 1
        fi
        export HPCSEG_SLURM_SKIP_REASON="local Slurm cluster unavailable: ${why:-scripts/local-slurm.sh up exited $rc}"
        {
            cat "$cluster_log"
            echo "run-tests: WARNING: $HPCSEG_SLURM_SKIP_REASON -- tests marked 'slurm' will be skipped"
        } >&2
    fi
    rm -f "$cluster_log"
fi

# Headless Chromium for the report's browser test (scripts/browser.sh; tests/test_report.py skips without it,
# or fails under CI=true).
if browser=$(bash "$ROOT/scripts/browser.sh" up); then
    export HPCSEG_CHROMIUM="$browser"
elif [ "${CI:-}" = true ]; then
    echo "run-tests: headless chromium could not be installed and CI=true: failing (scripts/browser.sh up)" >&2
    exit 1
else
    echo "run-tests: WARNING: no headless chromium -- the report's browser tests will be skipped" >&2
fi

# Charliecloud's tools (ch-run, mmdebstrap; apt-get when missing) for tests/test_charliecloud.py, which
# builds or reuses its image itself; without them that test skips, or fails under CI=true.
bash "$ROOT/singularity/charliecloud/build.sh" --tools || echo "run-tests: WARNING: Charliecloud tools unavailable" >&2

# Two workers (pytest-xdist), whole files each so module fixtures are built once: half the suite's time is
# spent waiting on Slurm jobs, which the other worker fills. HPCSEG_TEST_WORKERS=0 runs in one process.
# Tests that take a Slurm daemon down hold the cluster alone (tests/conftest.py, cluster_lock).
workers=${HPCSEG_TEST_WORKERS:-2}
parallel=()
if [ "$workers" != 0 ]; then
    parallel=(-n "$workers" --dist loadfile)
fi
"$PY" -m pytest -q -p no:cacheprovider --timeout=900 "${parallel[@]}" "$@"
rc=$?
if [ "$rc" = 5 ]; then
    echo "run-tests: pytest collected no tests (exit 5): treating as a failure" >&2
    exit 5
fi
exit "$rc"
