//! AWS SDK errors in words: the one place an SDK error becomes the text a report or an error
//! message carries.

use std::error::Error;
use std::fmt::Debug;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// The error with its whole chain of causes (the SDK's `Display` says only "service error").
pub fn chain(e: &(dyn Error + 'static)) -> String {
    DisplayErrorContext(e).to_string()
}

/// What the service said (`Code: message`) when it answered, else the whole chain: a
/// timeout, a refused connection or a signing failure.
pub fn reason<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + Error + 'static,
    R: Debug + 'static,
{
    match e.as_service_error().and_then(ProvideErrorMetadata::message) {
        Some(m) => format!("{}: {m}", e.code().unwrap_or("error")),
        None => chain(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::operation::get_object::GetObjectError;
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    #[test]
    fn a_service_answer_reads_as_its_code_and_message() {
        let meta = ErrorMetadata::builder()
            .code("AccessDenied")
            .message("no s3:GetObject")
            .build();
        let e: SdkError<GetObjectError, Response> = SdkError::service_error(
            GetObjectError::generic(meta),
            Response::new(StatusCode::try_from(403).unwrap(), SdkBody::empty()),
        );
        assert_eq!(reason(&e), "AccessDenied: no s3:GetObject");
    }

    #[test]
    fn a_failure_without_an_answer_keeps_its_causes() {
        let e: SdkError<GetObjectError, Response> =
            SdkError::timeout_error(std::io::Error::other("no answer in 5 s"));
        let text = reason(&e);
        assert!(text.contains("no answer in 5 s"), "{text}");
    }
}
