"""The buckets the tests mount, inspected directly (their backing directory, boto3 on an S3 server, the JSON API
of fake-gcs-server), apart from the mount."""
import json
import os


def is_daemon_state(key):
    """The daemon keeps its session records (and lock objects) under `.bucketfs/` in the bucket."""
    return key.startswith(".bucketfs/")


class FileBucket:
    """A file:// bucket, inspected directly in its backing directory."""

    def __init__(self, directory):
        self.directory = directory
        self.directory.mkdir(exist_ok=True)
        self.url = f"file://{directory}/"

    def get(self, key):
        path = self.directory / key
        return path.read_bytes() if path.is_file() else None

    def put(self, key, data):
        path = self.directory / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def exists(self, key):
        """An object or a directory (implicit or marker) under this name."""
        return (self.directory / key).exists()

    def keys(self):
        """Every object that is not a directory marker nor the daemon's own state (`.bucketfs/`), sorted."""
        return sorted(str(p.relative_to(self.directory)) for p in self.directory.rglob("*")
                      if p.is_file() and ".bucketfs-local" not in p.parts and not is_daemon_state(
                          str(p.relative_to(self.directory))))

    def metadata(self, key):
        value = os.getxattr(self.directory / key, "user.bucketfs")
        return json.loads(value)["metadata"]


class S3Bucket:
    """An s3:// bucket on the test's moto_server, inspected with boto3."""

    def __init__(self, client, name):
        self.client = client
        self.name = name
        client.create_bucket(Bucket=name)
        self.url = f"s3://{name}/"

    def get(self, key):
        try:
            return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def put(self, key, data):
        self.client.put_object(Bucket=self.name, Key=key, Body=data, ContentType="application/octet-stream")

    def exists(self, key):
        if self.get(key) is not None:
            return True
        return self.client.list_objects_v2(Bucket=self.name, Prefix=key + "/", MaxKeys=1)["KeyCount"] > 0

    def all_keys(self):
        keys = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return sorted(keys)

    def keys(self):
        """Objects that are not directory markers nor the daemon's own state (`.bucketfs/`)."""
        return [k for k in self.all_keys() if not k.endswith("/") and not is_daemon_state(k)]

    def metadata(self, key):
        return self.client.head_object(Bucket=self.name, Key=key)["Metadata"]


class GCSBucket:
    """A gs:// bucket on the test's fake-gcs-server, inspected through the JSON API (urllib, no client library)."""

    def __init__(self, server, name):
        self.server = server
        self.name = name
        server.call("POST", "/storage/v1/b", json.dumps({"name": name}).encode(), "application/json")
        self.url = f"gs://{name}/"

    def _object(self, key):
        import urllib.parse
        return f"/storage/v1/b/{self.name}/o/{urllib.parse.quote(key, safe='')}"

    def get(self, key):
        status, body = self.server.call("GET", self._object(key) + "?alt=media", check=False)
        return body if status == 200 else None

    def put(self, key, data):
        import urllib.parse
        path = f"/upload/storage/v1/b/{self.name}/o?uploadType=media&name={urllib.parse.quote(key, safe='')}"
        self.server.call("POST", path, data, "application/octet-stream")

    def exists(self, key):
        if self.get(key) is not None:
            return True
        return bool(self._list(key + "/", 1))

    def _list(self, prefix="", limit=None):
        import urllib.parse
        names, token = [], None
        while True:
            query = {"prefix": prefix}
            if limit:
                query["maxResults"] = str(limit)
            if token:
                query["pageToken"] = token
            _, body = self.server.call("GET", f"/storage/v1/b/{self.name}/o?" + urllib.parse.urlencode(query))
            page = json.loads(body)
            names += [item["name"] for item in page.get("items", [])]
            token = page.get("nextPageToken")
            if not token or limit:
                return names

    def all_keys(self):
        return sorted(self._list())

    def keys(self):
        """Objects that are not directory markers nor the daemon's own state (`.bucketfs/`)."""
        return [k for k in self.all_keys() if not k.endswith("/") and not is_daemon_state(k)]

    def metadata(self, key):
        _, body = self.server.call("GET", self._object(key))
        return json.loads(body).get("metadata", {})
