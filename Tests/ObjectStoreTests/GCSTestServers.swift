import Foundation
import Glibc
import TestSupport
import XCTest

@testable import ObjectStore

/// A token endpoint and a stand-in storage endpoint in one small Python server (`cryptography` checks the JWT's
/// RS256 signature with the public key of a key pair it makes at start and writes out for the test).
final class TokenTestServer: ServerProcess, @unchecked Sendable {
    static let serviceEmail = "bucketfs-test@test-project.iam.gserviceaccount.com"
    let email = TokenTestServer.serviceEmail
    let directory: String
    var tokenURI: String { endpoint + "/token" }

    init() throws {
        let directory = NSTemporaryDirectory() + "gcs-token-\(UUID().uuidString)"
        self.directory = directory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try Self.script.write(toFile: directory + "/server.py", atomically: true, encoding: .utf8)
        let python = try Loopback.require("python3", install: "apt-get install python3")
        let email = Self.serviceEmail
        try super.init(
            name: "token server", executable: python,
            arguments: { port in
                [directory + "/server.py", String(port), directory, email]
            }, stderr: FileHandle(forWritingAtPath: "/dev/stderr") ?? .nullDevice)
    }

    override func stop() {
        super.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// A service-account JSON file naming this server's token endpoint; `wrongKey` signs with a key it does not know.
    func credentialsFile(wrongKey: Bool = false) throws -> String {
        let pem = try String(contentsOfFile: directory + (wrongKey ? "/wrong.pem" : "/key.pem"), encoding: .utf8)
        let document: [String: Any] = [
            "type": "service_account", "project_id": "test-project", "private_key_id": "key-1",
            "private_key": pem, "client_email": email, "token_uri": tokenURI,
        ]
        let path = directory + (wrongKey ? "/wrong.json" : "/sa.json")
        try JSONSerialization.data(withJSONObject: document).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// What the server saw: tokens issued, Authorization headers, rejected JWTs, 401s sent.
    func stats() throws -> [String: Any] {
        try control("/stats")
    }

    @discardableResult
    func control(_ path: String) throws -> [String: Any] {
        let response = try HTTPClient(options: HTTPClient.Options()).perform(
            HTTPRequest(method: "GET", url: endpoint + path))
        return (try JSONSerialization.jsonObject(with: response.body) as? [String: Any]) ?? [:]
    }

    private static let script = #"""
        import base64, json, os, sys, time, urllib.parse
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        port, directory, email = int(sys.argv[1]), sys.argv[2], sys.argv[3]

        def write_key(name):
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            with open(os.path.join(directory, name), "wb") as f:
                f.write(pem)
            return key.public_key()

        public_key = write_key("key.pem")
        write_key("wrong.pem")
        state = {"issued": 0, "auth": [], "rejected": [], "unauthorized": 0, "flaky": 0, "lifetime": 3600,
                 "revoked": None, "claims": None}

        def unb64(text):
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, code, document):
                body = json.dumps(document).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def issue(self):
                state["issued"] += 1
                self.reply(200, {"access_token": "token-%d" % state["issued"], "expires_in": state["lifetime"],
                                 "token_type": "Bearer"})

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                if self.path != "/token":
                    return self.reply(404, {})
                try:
                    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"], "grant_type"
                    header, claims, signature = form["assertion"][0].split(".")
                    public_key.verify(unb64(signature), (header + "." + claims).encode(), padding.PKCS1v15(),
                                      hashes.SHA256())
                    header, claims = json.loads(unb64(header)), json.loads(unb64(claims))
                    now = time.time()
                    assert header["alg"] == "RS256" and header.get("kid") == "key-1", "header %r" % header
                    assert claims["iss"] == email, "iss"
                    assert "https://www.googleapis.com/auth/devstorage" in claims["scope"], "scope"
                    assert claims["aud"] == "http://127.0.0.1:%d/token" % port, "aud"
                    assert abs(claims["iat"] - now) < 120, "iat"
                    assert 0 < claims["exp"] - claims["iat"] <= 3600, "exp"
                    state["claims"] = claims
                except Exception as error:
                    state["rejected"].append(repr(error))
                    return self.reply(400, {"error": "invalid_grant", "error_description": "JWT rejected: %r" % error})
                self.issue()

            def do_GET(self):
                path = self.path
                if path == "/stats":
                    return self.reply(200, state)
                if path.startswith("/lifetime/"):
                    state["lifetime"] = int(path.rsplit("/", 1)[1])
                    return self.reply(200, state)
                if path == "/revoke":
                    state["revoked"] = "token-%d" % state["issued"]
                    return self.reply(200, state)
                if path.startswith("/computeMetadata/v1/instance/service-accounts/default/token"):
                    if self.headers.get("Metadata-Flavor") != "Google":
                        return self.reply(403, {"error": "missing Metadata-Flavor"})
                    return self.issue()
                if path.startswith("/storage/v1/b/"):
                    auth = self.headers.get("Authorization")
                    state["auth"].append(auth)
                    if "/b/flaky/" in path and state["flaky"] < 2:
                        state["flaky"] += 1
                        return self.reply(503, {"error": {"code": 503, "message": "try again"}})
                    current = "token-%d" % state["issued"]
                    if auth != "Bearer " + current or current == state["revoked"]:
                        state["unauthorized"] += 1
                        return self.reply(401, {"error": {"code": 401, "message": "Invalid Credentials",
                                                          "errors": [{"reason": "authError"}]}})
                    return self.reply(200, {"kind": "storage#objects"})
                self.reply(404, {})

        ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
        """#
}
