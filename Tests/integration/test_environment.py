"""Configuration from the environment (BUCKETFS_*) and AWS credentials from where the code runs, on real mounts."""
import os

import pytest

from conftest import BIN, is_mounted, run
from servers import CredentialStandIns


def clean_env(**extra):
    """The test environment without AWS keys or BUCKETFS_* options, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and not (k.startswith("BUCKETFS_") and k != "BUCKETFS_BIN")}
    env.update(extra)
    return env


def test_container_style_mount_with_no_file(tmp_path):
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    (bucket / "hello.txt").write_text("hi\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = clean_env(BUCKETFS_SOURCE=f"file://{bucket}/", BUCKETFS_CACHE_DIR=str(tmp_path / "cache"),
                    BUCKETFS_READ_ONLY="true", BUCKETFS_FILE_MODE="0600", BUCKETFS_LOCK_STRATEGY="none", MNT=str(mnt))
    run("sh", "-c", f'exec "{BIN}" mount "$BUCKETFS_SOURCE" "$MNT"', env=env)
    try:
        assert (mnt / "hello.txt").read_text() == "hi\n"
        assert oct((mnt / "hello.txt").stat().st_mode & 0o777) == "0o600"
        with pytest.raises(OSError) as error:
            (mnt / "new.txt").write_text("x")
        assert error.value.errno == 30  # EROFS: BUCKETFS_READ_ONLY
    finally:
        run(BIN, "unmount", str(mnt))
    assert not is_mounted(mnt)


def test_config_print_names_the_layer_of_each_value(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("mount:\n  uid: 10\n  gid: 11\n")
    env = clean_env(BUCKETFS_CONFIG=str(cfg), BUCKETFS_GID="41", BUCKETFS_LOCK_STRATEGY="redis",
                    BUCKETFS_REDIS_URL="redis://:hunter2@127.0.0.1:6390/0", BUCKETFS_SOURCE="file:///srv/x",
                    BUCKETFS_LOCK_STRATGY="typo")
    out = run(BIN, "config", "print", "--sources", "--metadata-ttl", "5", env=env).stdout
    assert 'source: "file:///srv/x/"' in out
    assert f"  uid: 10  # {cfg}\n" in out
    assert "  gid: 41  # BUCKETFS_GID\n" in out
    assert '    strategy: "redis"  # BUCKETFS_LOCK_STRATEGY\n' in out
    assert "  metadata_ttl: 5.0  # flag\n" in out
    assert "hunter2" not in out
    assert "ignored (not bucketfs options): BUCKETFS_LOCK_STRATGY" in out


def test_bad_environment_value_is_one_line(tmp_path):
    result = run(BIN, "mount", f"file://{tmp_path}/", str(tmp_path), check=False,
                 env=clean_env(BUCKETFS_PART_SIZE_MIB="lots"))
    assert result.returncode != 0
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "BUCKETFS_PART_SIZE_MIB" in lines[0], result.stderr


@pytest.fixture
def standins(tmp_path):
    server = CredentialStandIns(tmp_path)
    yield server
    server.stop()


def mount_with(env, source, tmp_path, name):
    mnt = tmp_path / f"{name}-mnt"
    mnt.mkdir()
    run(BIN, "mount", source, str(mnt), "--cache-dir", str(tmp_path / f"{name}-cache"), env=env)
    assert is_mounted(mnt)
    return mnt


def write_read_unmount(mnt, bucket, env):
    try:
        (mnt / "f.txt").write_text("credentials from where the code runs\n")
        assert (mnt / "f.txt").read_text() == "credentials from where the code runs\n"
    finally:
        run(BIN, "unmount", str(mnt), env=env)
    assert bucket.get("f.txt") == b"credentials from where the code runs\n"


def test_s3_mount_with_web_identity_through_moto_sts(moto, tmp_path):
    bucket = moto.new_bucket()
    token = tmp_path / "web-identity-token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGF0YTpib3QifQ.c2ln")
    env = clean_env(HOME=str(tmp_path), AWS_ENDPOINT_URL=moto.endpoint, AWS_REGION="us-east-1",
                    AWS_WEB_IDENTITY_TOKEN_FILE=str(token), AWS_ROLE_ARN="arn:aws:iam::123456789012:role/data-bot",
                    AWS_EC2_METADATA_DISABLED="true")
    out = run(BIN, "config", "print", bucket.url, env=env).stdout
    assert 'credentials: "web identity (AWS_WEB_IDENTITY_TOKEN_FILE: role arn:aws:iam::123456789012:role/data-bot' in out
    write_read_unmount(mount_with(env, bucket.url, tmp_path, "web"), bucket, env)


def test_s3_mount_with_instance_metadata_and_container_credentials(moto, standins, tmp_path):
    bucket = moto.new_bucket()
    env = clean_env(HOME=str(tmp_path), AWS_ENDPOINT_URL=moto.endpoint, AWS_REGION="us-east-1",
                    AWS_EC2_METADATA_SERVICE_ENDPOINT=standins.endpoint)
    assert "IMDSv2" in run(BIN, "config", "print", bucket.url, env=env).stdout
    write_read_unmount(mount_with(env, bucket.url, tmp_path, "imds"), bucket, env)
    stats = standins.stats()
    assert stats["imds_issued"] >= 1 and stats["imds_unauthorized"] == 0

    token = tmp_path / "container-token"
    token.write_text(standins.token)
    env = clean_env(HOME=str(tmp_path), AWS_ENDPOINT_URL=moto.endpoint, AWS_REGION="us-east-1",
                    AWS_CONTAINER_CREDENTIALS_FULL_URI=standins.endpoint + "/container-credentials",
                    AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=str(token))
    out = run(BIN, "config", "print", bucket.url, env=env).stdout
    assert "container credentials" in out and standins.token not in out
    write_read_unmount(mount_with(env, bucket.url, tmp_path, "ecs"), bucket, env)
    assert standins.stats()["container_issued"] >= 1


def test_no_credentials_anywhere_is_one_line(moto, tmp_path, standins):
    # The metadata endpoint answers nothing useful (a port with no server): the chain ends with one line.
    env = clean_env(HOME=str(tmp_path), AWS_ENDPOINT_URL=moto.endpoint, AWS_EC2_METADATA_SERVICE_ENDPOINT="http://127.0.0.1:9")
    result = run(BIN, "mount", "s3://whatever/", str(tmp_path), check=False, env=env)
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert "no AWS credentials found" in lines[0], lines[0]
