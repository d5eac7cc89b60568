import Foundation

/// Credentials from where the code runs: the container credentials endpoint (ECS, EKS Pod Identity), EC2
/// instance metadata (IMDSv2), or a `credential_process` command. Each answers the same JSON shape:
/// `AccessKeyId`, `SecretAccessKey`, `Token`/`SessionToken`, `Expiration` (ISO 8601).
struct AWSMetadataCredentials {
    let client: HTTPClient

    /// Hosts a plain-http `AWS_CONTAINER_CREDENTIALS_FULL_URI` may name (the SDKs' rule: a token must not travel
    /// in the clear off the machine): loopback, and the ECS and EKS link-local endpoints.
    static let plainHTTPHosts: Set<String> = [
        "127.0.0.1", "localhost", "[::1]", "169.254.170.2", "169.254.170.23",
        "[fd00:ec2::23]",
    ]

    func container(url: String, tokenFile: String?, token: String?) throws(ObjectStoreError) -> S3Credentials {
        let request = HTTPRequest(method: "GET", url: url)
        if url.lowercased().hasPrefix("http://") {
            let host = request.host.split(separator: ":").first.map(String.init) ?? ""
            let bracketed = request.host.hasPrefix("[") ? String(request.host.prefix { $0 != "]" }) + "]" : host
            guard Self.plainHTTPHosts.contains(bracketed) else {
                throw .unauthorized("container credentials URL \(url): plain http only to loopback or 169.254.170.2/23")
            }
        }
        var headers: [(String, String)] = []
        if let tokenFile {
            // Re-read at each fetch: the agent rotates it.
            guard let data = FileManager.default.contents(atPath: tokenFile) else {
                throw .unauthorized("cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE \(tokenFile)")
            }
            headers.append(
                (
                    "authorization",
                    String(decoding: data, as: UTF8.self)
                        .trimmingCharacters(in: .whitespacesAndNewlines)
                ))
        } else if let token {
            headers.append(("authorization", token))
        }
        let response = try get(
            HTTPRequest(method: "GET", url: url, headers: headers), what: "container credentials \(url)")
        return try Self.parse(response.body, from: "container credentials \(url)")
    }

    /// IMDSv2: a session token (PUT), the role's name, then its credentials. Off EC2 nothing answers: the token
    /// request is tried once (the chain's last resort must not hold up the "no credentials" line).
    func instance(endpoint: String, probeAttempts: Int = 1) throws(ObjectStoreError) -> S3Credentials {
        let what = "EC2 instance metadata at \(endpoint)"
        let tokenResponse = try get(
            HTTPRequest(
                method: "PUT", url: endpoint + "/latest/api/token",
                headers: [("x-aws-ec2-metadata-token-ttl-seconds", "21600")]),
            what: what, attempts: probeAttempts)
        let token = String(decoding: tokenResponse.body, as: UTF8.self)
        let auth = [("x-aws-ec2-metadata-token", token)]
        let base = endpoint + "/latest/meta-data/iam/security-credentials/"
        let roles = try get(HTTPRequest(method: "GET", url: base, headers: auth), what: what)
        guard
            let role = String(decoding: roles.body, as: UTF8.self).split(whereSeparator: \.isNewline).first
                .map({ $0.trimmingCharacters(in: .whitespaces) }), !role.isEmpty
        else {
            throw .unauthorized("\(what): the instance has no IAM role")
        }
        let response = try get(HTTPRequest(method: "GET", url: base + role, headers: auth), what: what)
        return try Self.parse(response.body, from: "\(what) (role \(role))")
    }

    /// Retries 5xx and broken connections, `attempts` in all.
    private func get(_ request: HTTPRequest, what: String, attempts: Int = 3) throws(ObjectStoreError) -> HTTPResponse {
        var attempt = 0
        while true {
            attempt += 1
            let response: HTTPResponse
            do { response = try client.perform(request) } catch {
                guard attempt < attempts else { throw .unauthorized("\(what): \(error)") }
                usleep(UInt32(100_000 * attempt))
                continue
            }
            if response.status == 200 { return response }
            if attempt < attempts, response.status >= 500 || response.status == 429 {
                usleep(UInt32(100_000 * attempt))
                continue
            }
            throw .unauthorized("\(what) answered HTTP \(response.status)")
        }
    }

    /// Runs `credential_process` through the shell and reads its standard output (its stderr goes to ours).
    static func run(process command: String, origin: String) throws(ObjectStoreError) -> S3Credentials {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command]
        let output = Pipe()
        process.standardOutput = output
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch {
            throw .unauthorized("credential_process of \(origin) could not start: \(error.localizedDescription)")
        }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw .unauthorized("credential_process of \(origin) exited with status \(process.terminationStatus)")
        }
        return try parse(data, from: "credential_process of \(origin)")
    }

    static func parse(_ data: Data, from what: String) throws(ObjectStoreError) -> S3Credentials {
        guard let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw .unauthorized("\(what) did not answer a JSON object")
        }
        if let code = json["Code"] as? String, code != "Success" {
            throw .unauthorized("\(what): \(code) \(json["Message"] as? String ?? "")")
        }
        guard let id = json["AccessKeyId"] as? String, !id.isEmpty,
            let secret = json["SecretAccessKey"] as? String, !secret.isEmpty
        else {
            throw .unauthorized("\(what) answered without AccessKeyId/SecretAccessKey")
        }
        let token = (json["Token"] as? String) ?? (json["SessionToken"] as? String)
        let expiration = (json["Expiration"] as? String).flatMap(HTTPTimestamp.parseISO8601)
        return S3Credentials(accessKeyID: id, secretAccessKey: secret, sessionToken: token, expiration: expiration)
    }
}
