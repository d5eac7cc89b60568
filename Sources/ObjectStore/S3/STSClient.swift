import Foundation

/// The two STS calls temporary credentials come from, over the Query API (form POST, XML answer).
/// AssumeRoleWithWebIdentity is unsigned (the token is the proof); AssumeRole is signed with the source keys.
/// Endpoint: `AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL`, else the regional `https://sts.<region>.amazonaws.com`.
struct STSClient {
    let client: HTTPClient
    let region: String
    let environment: [String: String]

    var endpoint: String {
        var url =
            S3Credentials.nonEmpty(environment["AWS_ENDPOINT_URL_STS"])
            ?? S3Credentials.nonEmpty(environment["AWS_ENDPOINT_URL"]) ?? "https://sts.\(region).amazonaws.com"
        if !url.contains("://") { url = "https://" + url }
        while url.hasSuffix("/") { url.removeLast() }
        return url
    }

    func assumeRoleWithWebIdentity(
        roleARN: String, sessionName: String,
        token: String
    ) throws(ObjectStoreError) -> S3Credentials {
        try call(
            "AssumeRoleWithWebIdentity",
            [
                ("RoleArn", roleARN), ("RoleSessionName", sessionName),
                ("WebIdentityToken", token),
            ], signedWith: nil, role: roleARN)
    }

    func assumeRole(
        roleARN: String, sessionName: String, externalID: String?,
        using keys: S3Credentials
    ) throws(ObjectStoreError) -> S3Credentials {
        var parameters = [("RoleArn", roleARN), ("RoleSessionName", sessionName)]
        if let externalID { parameters.append(("ExternalId", externalID)) }
        return try call("AssumeRole", parameters, signedWith: keys, role: roleARN)
    }

    private func call(
        _ action: String, _ parameters: [(String, String)], signedWith keys: S3Credentials?,
        role: String
    ) throws(ObjectStoreError) -> S3Credentials {
        let form = ([("Action", action), ("Version", "2011-06-15")] + parameters)
            .map { "\($0.0)=\(Self.formEncode($0.1))" }.joined(separator: "&")
        let body = Data(form.utf8)
        let base = endpoint
        let authority = String(base[base.range(of: "://")!.upperBound...].prefix { $0 != "/" })
        var headers = [("host", authority), ("content-type", "application/x-www-form-urlencoded; charset=utf-8")]
        if let keys {
            let signer = SigV4Signer(
                accessKeyID: keys.accessKeyID, secretAccessKey: keys.secretAccessKey,
                sessionToken: keys.sessionToken, region: region, service: "sts")
            headers += signer.signingHeaders(
                method: "POST", path: "/", query: [], headers: headers,
                payloadHash: Hashing.hex(Hashing.sha256(body)), date: Date())
        }
        let what = "STS \(action) for \(role) at \(base)"
        let response: HTTPResponse
        do {
            response = try client.perform(
                HTTPRequest(method: "POST", url: base + "/", headers: headers, body: .data(body)))
        } catch {
            throw .transport("\(what): \(error)")
        }
        let xml = S3XML.parse(response.body)
        guard response.status == 200 else {
            let error = xml?.all("Error").first
            let detail = [error?.value("Code"), error?.value("Message")].compactMap { $0 }.joined(separator: ": ")
            throw .unauthorized("\(what) refused: \(detail.isEmpty ? "HTTP \(response.status)" : detail)")
        }
        guard let credentials = xml?.all("\(action)Result").first?.all("Credentials").first,
            let id = credentials.value("AccessKeyId"), let secret = credentials.value("SecretAccessKey")
        else {
            throw .unauthorized("\(what) answered without credentials")
        }
        return S3Credentials(
            accessKeyID: id, secretAccessKey: secret, sessionToken: credentials.value("SessionToken"),
            expiration: credentials.value("Expiration").flatMap(HTTPTimestamp.parseISO8601))
    }

    static func formEncode(_ value: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return value.addingPercentEncoding(withAllowedCharacters: allowed) ?? value
    }
}
