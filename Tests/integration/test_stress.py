"""stress-ng's filesystem stressors on the mount, with verification, bounded in time, on file:// and s3:// (moto).

Each stressor runs alone (so a failure names it) for STRESS_SECONDS in a directory of the mount. It must exit 0,
print no failure, report work done (bogo ops > 0), leave nothing behind, and no upload may have ended in the
recovery folder (a conflict or failed upload there would be data the program thinks was written).
"""
import os
import re

import pytest

from conftest import BACKENDS, listdir, run

STRESS_SECONDS = int(os.environ.get("BUCKETFS_STRESS_SECONDS", "10"))

STRESSORS = {
    # mkdir/rmdir of many directories
    "dir": ["--dir", "1", "--dir-dirs", "256"],
    # create, rename again and again, unlink
    "rename": ["--rename", "1"],
    # chmod/fchmod through every mode bit on an open file
    "chmod": ["--chmod", "1"],
    # utime/utimes/futimens/utimensat with UTIME_NOW/UTIME_OMIT on an open file
    "utime": ["--utime", "1"],
    # write, then read back and compare (--verify), of an 8 MiB file per round
    "hdd": ["--hdd", "1", "--hdd-bytes", "8M", "--hdd-write-size", "64K"],
}


@pytest.fixture(params=[b for b in BACKENDS if b in ("file", "s3")])
def backend(request):
    return request.param


# Fail on main today (issue 11): test name -> the bug. Remove an entry when its fix lands.
KNOWN_BUGS: dict[str, str] = {}


@pytest.fixture(autouse=True)
def known_bug(request):
    reason = KNOWN_BUGS.get(request.node.name)
    if reason:
        request.node.add_marker(pytest.mark.xfail(strict=False, reason="issue 11: " + reason))


def files_under(path):
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs)


@pytest.mark.parametrize("stressor", list(STRESSORS))
def test_stress_ng_filesystem_stressor(mnt, tmp_path, stressor):
    work = mnt / "stress"
    work.mkdir()
    report = tmp_path / "metrics.yaml"
    result = run("stress-ng", *STRESSORS[stressor], "--verify", "--timeout", f"{STRESS_SECONDS}s",
                 "--temp-path", str(work), "--metrics-brief", "--yaml", str(report), check=False,
                 timeout=STRESS_SECONDS * 6 + 60)
    output = result.stdout + result.stderr
    failures = [line for line in output.splitlines() if re.search(r"\b(fail|error)\b", line, re.I)
                and "0 failed" not in line]
    assert result.returncode == 0 and not failures, f"stress-ng --{stressor} exited {result.returncode}:\n{output}"
    ops = re.search(r"stressor: " + stressor + r"\n\s+bogo-ops: (\d+)", report.read_text())
    assert ops and int(ops.group(1)) > 0, f"no work done by --{stressor}:\n{report.read_text()}"
    assert listdir(work) == [], f"stress-ng left {listdir(work)} behind"
    recovery = mnt.cache / "recovery"
    assert not recovery.exists() or files_under(recovery) == [], f"uploads lost: {files_under(recovery)}"
