#!/usr/bin/env python3
"""Loopback stand-ins for the credential services bucketfs asks where it runs (tests only):

- EC2 instance metadata, IMDSv2: PUT /latest/api/token, then /latest/meta-data/iam/security-credentials/[ROLE]
  with the token (a request without it gets 401, as IMDSv2 with tokens required);
- the ECS/EKS container credentials endpoint: GET /container-credentials, Authorization must equal TOKEN;
- Google's STS (POST /v1/token, token exchange of the subject token in SUBJECT_FILE), IAM Credentials
  (POST /impersonate, Bearer of a federated token) and the storage list call (Bearer of an impersonated token).

Each credential issued is new (KEY-<n>) and expires after `lifetime` seconds (GET /_lifetime/<s> changes it).
GET /_stats answers what was seen as JSON. Usage: credential_standins.py PORT TOKEN SUBJECT_FILE
"""
import datetime
import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROLE = "bucketfs-test-role"
port, container_token, subject_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
lock = threading.Lock()
state = {"lifetime": 3600, "imds_tokens": 0, "imds_issued": 0, "imds_unauthorized": 0, "container_issued": 0,
         "container_rejected": 0, "sts_issued": 0, "sts_rejected": 0, "impersonated": 0, "storage_auth": [],
         "storage_rejected": 0, "issued": 0}
imds_tokens, federated, impersonated = set(), set(), set()


def expiry():
    at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=state["lifetime"])
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def aws_credentials(kind):
    with lock:
        state["issued"] += 1
        state[kind] += 1
        n = state["issued"]
    return {"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": f"KEY-{n}", "SecretAccessKey": f"secret-{n}",
            "Token": f"session-{n}", "Expiration": expiry(), "LastUpdated": expiry()}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else (json.dumps(body) if not isinstance(body, str) else body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_PUT(self):
        self.body()
        if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            with lock:
                state["imds_tokens"] += 1
                token = f"imds-token-{state['imds_tokens']}"
                imds_tokens.add(token)
            return self.answer(200, token, "text/plain")
        self.answer(400, "bad token request", "text/plain")

    def do_GET(self):
        path = self.path
        if path == "/_stats":
            return self.answer(200, state)
        if path.startswith("/_lifetime/"):
            state["lifetime"] = int(path.rsplit("/", 1)[1])
            return self.answer(200, state)
        if path.startswith("/latest/meta-data/iam/security-credentials/"):
            if self.headers.get("X-aws-ec2-metadata-token") not in imds_tokens:
                state["imds_unauthorized"] += 1
                return self.answer(401, "", "text/plain")
            role = path[len("/latest/meta-data/iam/security-credentials/"):]
            if role == "":
                return self.answer(200, ROLE + "\n", "text/plain")
            if role != ROLE:
                return self.answer(404, "", "text/plain")
            return self.answer(200, aws_credentials("imds_issued"))
        if path == "/container-credentials":
            if self.headers.get("Authorization") != container_token:
                state["container_rejected"] += 1
                return self.answer(403, {"message": "bad authorization token"})
            body = aws_credentials("container_issued")
            del body["Code"], body["Type"], body["LastUpdated"]
            return self.answer(200, body)
        if path.startswith("/storage/v1/b/"):
            auth = self.headers.get("Authorization", "")
            state["storage_auth"].append(auth)
            if auth.removeprefix("Bearer ") not in impersonated | federated:
                state["storage_rejected"] += 1
                return self.answer(401, {"error": {"code": 401, "message": "bad token"}})
            return self.answer(200, {"kind": "storage#objects", "items": []})
        self.answer(404, {"error": "no such path"})

    def do_POST(self):
        body = self.body()
        if self.path == "/v1/token":
            form = urllib.parse.parse_qs(body.decode())
            with open(subject_file) as f:
                subject = f.read().strip()
            ok = (form.get("grant_type") == ["urn:ietf:params:oauth:grant-type:token-exchange"]
                  and form.get("subject_token") == [subject] and form.get("audience", [""])[0].startswith("//iam"))
            if not ok:
                state["sts_rejected"] += 1
                return self.answer(400, {"error": "invalid_grant", "error_description": "subject token rejected"})
            with lock:
                state["sts_issued"] += 1
                token = f"federated-{state['sts_issued']}"
                federated.add(token)
            return self.answer(200, {"access_token": token, "issued_token_type":
                                     "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer",
                                     "expires_in": state["lifetime"]})
        if self.path == "/impersonate":
            if self.headers.get("Authorization", "").removeprefix("Bearer ") not in federated:
                return self.answer(401, {"error": {"code": 401, "message": "not a federated token"}})
            with lock:
                state["impersonated"] += 1
                token = f"impersonated-{state['impersonated']}"
                impersonated.add(token)
            return self.answer(200, {"accessToken": token, "expireTime": expiry()})
        self.answer(404, {"error": "no such path"})


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
