/// Where a mount notes its multipart uploads while they are in flight, so that one interrupted by a crash can
/// be found at the next mount (its staged data saved for recovery, the upload aborted) — never lost silently.
/// The CLI keeps them as `UploadState` records; a journal that cannot write only logs: uploads go on.
public protocol UploadJournal: Sendable {
    /// A multipart upload of `key` began; its data is staged at `stagedPath`. Returns the journal's id for it.
    func begun(key: String, uploadID: String, stagedPath: String) -> String?
    /// The upload was completed or aborted.
    func ended(_ id: String)
}
