"""CPython's own test modules (Debian's libpython3.11-testsuite for /usr/bin/python3) with the working directory
and TMPDIR inside the mount, on file:// and s3:// (moto).

One failing test can leave `@test_<pid>_tmp*` names behind, and every later test of the module then fails in
setUp. So the modules run once (phase 1), and each test that failed there runs again alone in a fresh directory
(phase 2): a test that fails alone is a real failure; one that passes alone was broken by an earlier one. The
report names the real failures first, then the first failure of the full run. Tests that fail by design are
listed in EXPECTED_FAILURES with the reason and not run; any other failure fails the test.
"""
import os
import re
import subprocess
import time

import pytest

from conftest import BACKENDS

PYTHON = "/usr/bin/python3"
MODULES = ["test_os", "test_shutil", "test_tempfile", "test_fcntl"]
RERUN_AT_MOST = 8  # failed tests run again alone, at most this many; the first failure is the report anyway
# On s3:// (moto: ~100 requests/s) the four modules take over 10 min here (test_os alone 9 min 40 s), so s3 runs
# test_shutil, test_tempfile and test_fcntl only, without the classes that only create and delete many temporary
# files or archives (the same filesystem paths; everything runs on file://).
MODULES_S3 = ["test_shutil", "test_tempfile", "test_fcntl"]
S3_LEFT_OUT = ["test.test_tempfile.TestTemporaryDirectory.*", "test.test_tempfile.TestMkstempInner.*",
               "test.test_tempfile.TestMkdtemp.*", "test.test_tempfile.TestMktemp.*",
               "test.test_shutil.TestArchives.*", "test.test_shutil.TestZeroCopySendfile.*"]

# test id -> why it cannot pass on bucketfs. (Hard links: link(2) is EPERM, which these modules skip on.)
EXPECTED_FAILURES = {
    "test.test_os.Pep383Tests.*": "needs a non-UTF-8 file name; bucketfs refuses those with EILSEQ (SEMANTICS.md)",
}

# Fail today on main; the lifecycle/POSIX work of issue 11 removes them (the bug each one shows).
KNOWN_BUGS = {
}

pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join("/usr/lib/python3.11/test", "test_os.py")),
                                reason="Debian's libpython3.11-testsuite is not installed")


@pytest.fixture(params=[b for b in BACKENDS if b in ("file", "s3")])
def backend(request):
    return request.param


def regrtest(mnt, name, args, timeout):
    """Runs `python3 -m test -v ARGS` in a fresh directory of the mount; returns (output, [(kind, id, text)])."""
    work = mnt / f"{name}-{time.monotonic_ns()}"
    (work / "tmp").mkdir(parents=True)
    env = dict(os.environ, TMPDIR=str(work / "tmp"))
    env.pop("PYTHONPATH", None)
    result = subprocess.run([PYTHON, "-m", "test", "-v", *args], cwd=work, env=env, capture_output=True, text=True,
                            timeout=timeout)
    output = result.stdout + result.stderr
    failures = []
    for block in re.split(r"^={60,}$", output, flags=re.M):
        m = re.match(r"\s*(FAIL|ERROR): (\w+) \((\S+)\)", block)
        if m:
            test_id = m.group(3)
            if m.group(2) in ("setUpClass", "tearDownClass", "setUpModule", "tearDownModule"):
                test_id += ".*"
            failures.append((m.group(1), test_id, block.split("-" * 70, 1)[-1].strip()))
    if result.returncode != 0 and not failures:
        failures.append(("CRASH", " ".join(args), output[-3000:]))
    return output, failures


def ignore_file(tmp_path, patterns):
    path = tmp_path / "ignore.txt"
    path.write_text("".join(p + "\n" for p in patterns))
    return str(path)


def last_line(text):
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def check_modules(mnt, tmp_path, modules, skip):
    ignore = ["--ignorefile", ignore_file(tmp_path, skip)]
    output, failures = regrtest(mnt, "all", [*ignore, *modules], timeout=1200)
    (tmp_path / "regrtest.log").write_text(output)
    if not failures:
        return
    seen, real, victims = set(), [], []
    for kind, test_id, text in failures:
        if test_id in seen:
            continue
        seen.add(test_id)
        if len(seen) > RERUN_AT_MOST:
            break
        module = test_id.split(".")[1]
        _, alone = regrtest(mnt, "alone", [*ignore, "--match", test_id, module], timeout=300)
        (real if alone else victims).append((kind, test_id, alone[0][2] if alone else text))
    report = [f"{len(seen)} failing tests in the full run (log: {tmp_path / 'regrtest.log'})"]
    report += [f"FAILS ALONE: {k} {t}: {last_line(x)}" for k, t, x in real]
    report += [f"fails only after others: {k} {t}: {last_line(x)}" for k, t, x in victims[:10]]
    report.append(f"first failure of the full run: {failures[0][0]} {failures[0][1]}\n{failures[0][2]}")
    pytest.fail("\n".join(report), pytrace=False)


def test_cpython_os_shutil_tempfile_fcntl(mnt, tmp_path, backend):
    skip = list(EXPECTED_FAILURES) + list(KNOWN_BUGS) + (S3_LEFT_OUT if backend == "s3" else [])
    check_modules(mnt, tmp_path, MODULES_S3 if backend == "s3" else MODULES, skip)
