//! The HTTP API's contract, in one place: its routes, and the JSON it accepts and returns.
//! Serde only, so the handlers (built for Lambda), the stack model and the smoke test can all
//! depend on it without pulling in anything else.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Every route of the API. Handlers dispatch on these and nothing else; the stack model
/// assigns each to one function, and a test checks that the two agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Route {
    /// `POST /upload`: the image bytes as the body.
    Upload,
    /// `POST /uploads`: a presigned PUT for a larger image.
    PresignUpload,
    /// `GET /metadata`: a page of every image's metadata.
    ListMetadata,
    /// `GET /metadata/{id}`: one image's metadata.
    GetMetadata,
    /// `GET /labels`: the labels in use, with their image counts.
    ListLabels,
    /// `GET /images/{id}`: a labeled image's bytes.
    GetImage,
    /// `GET /images/{id}/thumbnail`: its thumbnail.
    GetThumbnail,
    /// `DELETE /images/{id}`: the image, its thumbnail, its item and its label index entries.
    DeleteImage,
    /// `GET /`: the gallery page.
    Gallery,
}

impl Route {
    pub const ALL: [Route; 9] = [
        Route::Upload,
        Route::PresignUpload,
        Route::ListMetadata,
        Route::GetMetadata,
        Route::ListLabels,
        Route::GetImage,
        Route::GetThumbnail,
        Route::DeleteImage,
        Route::Gallery,
    ];

    pub fn method(self) -> &'static str {
        match self {
            Route::Upload | Route::PresignUpload => "POST",
            Route::ListMetadata
            | Route::GetMetadata
            | Route::ListLabels
            | Route::GetImage
            | Route::GetThumbnail
            | Route::Gallery => "GET",
            Route::DeleteImage => "DELETE",
        }
    }

    /// With `{name}` path parameters, as API Gateway route keys write them.
    pub fn path(self) -> &'static str {
        match self {
            Route::Upload => "/upload",
            Route::PresignUpload => "/uploads",
            Route::ListMetadata => "/metadata",
            Route::GetMetadata => "/metadata/{id}",
            Route::ListLabels => "/labels",
            Route::GetImage => "/images/{id}",
            Route::GetThumbnail => "/images/{id}/thumbnail",
            Route::DeleteImage => "/images/{id}",
            Route::Gallery => "/",
        }
    }

    /// `POST /upload`: API Gateway's route key.
    pub fn key(self) -> String {
        format!("{} {}", self.method(), self.path())
    }

    /// Whether a concrete path (`/metadata/3f…`) has this route's shape: literal segments
    /// equal, each `{param}` one non-empty segment.
    pub fn path_matches(self, path: &str) -> bool {
        let want: Vec<&str> = self.path().split('/').collect();
        let got: Vec<&str> = path.split('/').collect();
        want.len() == got.len()
            && want.iter().zip(&got).all(|(w, g)| {
                if w.starts_with('{') {
                    !g.is_empty()
                } else {
                    w == g
                }
            })
    }

    /// Whether a request needs a signed-in user's access token: every route but the page.
    pub fn signed_in(self) -> bool {
        self != Route::Gallery
    }

    /// The route among `routes` a request is for.
    pub fn find(routes: &[Route], method: &str, path: &str) -> Option<Route> {
        routes
            .iter()
            .copied()
            .find(|r| r.method().eq_ignore_ascii_case(method) && r.path_matches(path))
    }
}

/// Where an image is in the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageStatus {
    /// A presigned upload was handed out and the image has not arrived yet.
    AwaitingUpload,
    /// Stored; labels are being detected.
    Processing,
    Labeled,
    Failed,
    /// A status this version does not know (an item written by a newer one).
    #[serde(other)]
    Unknown,
}

impl ImageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageStatus::AwaitingUpload => "awaiting_upload",
            ImageStatus::Processing => "processing",
            ImageStatus::Labeled => "labeled",
            ImageStatus::Failed => "failed",
            ImageStatus::Unknown => "unknown",
        }
    }

    /// The status an item's attribute names; anything else is `Unknown`.
    pub fn parse(s: &str) -> Self {
        [
            ImageStatus::AwaitingUpload,
            ImageStatus::Processing,
            ImageStatus::Labeled,
            ImageStatus::Failed,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
        .unwrap_or(ImageStatus::Unknown)
    }
}

/// Why an image ended `failed`, in the API's own words. The service's own error (its code and
/// message) goes to the process function's log, never to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// Not a JPEG or PNG the label service can read.
    UnsupportedImage,
    /// Larger than the label service accepts, in bytes or in pixels.
    ImageTooLarge,
    /// A side below the label service's minimum.
    ImageTooSmall,
    /// Starts like a JPEG or PNG but does not decode, or has data after the image's end.
    InvalidImage,
    /// The stored image could not be read: deleted before it was processed, or unreadable.
    ImageUnavailable,
    /// The label service refused the image for another reason.
    ImageRejected,
    /// A reason this version does not know (an item written by another one).
    #[serde(other)]
    Unknown,
}

impl FailureReason {
    pub const ALL: [FailureReason; 6] = [
        FailureReason::UnsupportedImage,
        FailureReason::ImageTooLarge,
        FailureReason::ImageTooSmall,
        FailureReason::InvalidImage,
        FailureReason::ImageUnavailable,
        FailureReason::ImageRejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::UnsupportedImage => "unsupported_image",
            FailureReason::ImageTooLarge => "image_too_large",
            FailureReason::ImageTooSmall => "image_too_small",
            FailureReason::InvalidImage => "invalid_image",
            FailureReason::ImageUnavailable => "image_unavailable",
            FailureReason::ImageRejected => "image_rejected",
            FailureReason::Unknown => "unknown",
        }
    }

    /// The reason an item's attribute names; anything else (older free text included) is
    /// `Unknown`, so no stored text reaches a client.
    pub fn parse(s: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .unwrap_or(FailureReason::Unknown)
    }
}

/// The largest body `POST /upload` accepts by default: API Gateway base64-encodes a binary
/// body, and Lambda's 6 MB request limit must hold it. Larger images take `POST /uploads`.
pub const MAX_DIRECT_UPLOAD_BYTES: usize = 4_500_000;

/// The confidence (percent) below which the process function stores no label by default,
/// Rekognition's own default.
pub const DEFAULT_MIN_CONFIDENCE: u8 = 55;

/// `POST /upload`, 201.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uploaded {
    pub image_id: String,
    pub status: ImageStatus,
    pub content_type: String,
    pub size_bytes: u64,
}

/// `POST /uploads` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresignRequest {
    pub content_type: String,
    pub size_bytes: i64,
}

/// `POST /uploads`, 201: where and how to PUT the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresignedUpload {
    pub image_id: String,
    pub status: ImageStatus,
    pub upload: PresignedPut,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresignedPut {
    pub method: String,
    pub url: String,
    /// Headers the PUT must carry exactly as given: the signature covers them.
    pub headers: BTreeMap<String, String>,
    pub expires_in_seconds: u64,
}

/// `GET /metadata/{id}`, 200: one image's metadata. Never where the image is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageMetadata {
    pub image_id: String,
    pub status: ImageStatus,
    pub labels: Vec<Label>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_model_version: Option<String>,
    pub content_type: Option<String>,
    pub size_bytes: Option<u64>,
    pub uploaded_at: Option<String>,
    pub processed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<FailureReason>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub name: String,
    pub confidence: f64,
    pub parents: Vec<String>,
}

/// `GET /metadata`, 200: one page, and the token for the next when there is one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    pub items: Vec<ImageMetadata>,
    pub next_token: Option<String>,
}

/// `GET /labels`, 200: every label with at least one image at `min_confidence` or above,
/// most frequent first (then by name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelCounts {
    pub labels: Vec<LabelCount>,
    /// The confidence (percent) the counts are for.
    pub min_confidence: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelCount {
    pub name: String,
    pub count: u64,
}

/// Every 4xx and 5xx answer: `{"error": {"code": …, "message": …}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable and machine-readable (`invalid_image`, `not_found`, …).
    pub code: String,
    pub message: String,
}

/// Sign-in: what the API's authorizer asks of a token.
pub mod auth {
    /// The scope Cognito puts in every access token of a user pool sign-in, and in no ID
    /// token (ID tokens carry no scope at all). Each signed-in route requires it, so only
    /// access tokens pass the authorizer.
    pub const ACCESS_TOKEN_SCOPE: &str = "aws.cognito.signin.user.admin";
}

/// The label index's layout, shared by the functions that write and read it and by the tool
/// that cleans up after its smoke test (docs/data-model.md). Storage, not API: clients never
/// see these keys.
pub mod index {
    /// The partition key attribute of the labels table.
    pub const PARTITION_KEY: &str = "pk";
    /// Its sort key attribute.
    pub const SORT_KEY: &str = "sk";
    /// A label entry's attribute: the label's confidence for that image.
    pub const CONFIDENCE: &str = "confidence";
    /// A count item's attribute: the label's name as the service spelled it.
    pub const NAME: &str = "name";
    /// The images table's partition key: the `sub` of the user the image belongs to. Its sort
    /// key is `image_id`.
    pub const OWNER: &str = "owner";
    /// The images table's sort key.
    pub const IMAGE_ID: &str = "image_id";
    /// The status of a deleted image's item: a tombstone that answers 404 like no item, keeps
    /// the process function from writing the image back, and expires.
    pub const DELETED: &str = "deleted";
    /// How long a tombstone stays, in seconds: past the last retry of the image's S3 event.
    pub const TOMBSTONE_SECONDS: u64 = 7 * 24 * 3600;
    /// The images table's index of each user's images, newest first (`GET /metadata`):
    /// partitioned by [`OWNER`], sorted by upload time.
    pub const LISTING_INDEX: &str = "newest-first";
    /// The index's sort key attribute: RFC 3339 in UTC with milliseconds, so it sorts as text.
    pub const UPLOADED_AT: &str = "uploaded_at";
    /// The longest label a search accepts (Rekognition's names are far shorter).
    pub const MAX_LABEL_CHARS: usize = 100;

    /// A cached thumbnail's key: `thumbnails/{owner}/{id}.jpg` (the images function writes
    /// it, the smoke test's clean-up removes it).
    pub fn thumbnail_key(prefix: &str, owner: &str, image_id: &str) -> String {
        format!("{prefix}{owner}/{image_id}.jpg")
    }

    /// The label as searched: trimmed and lowercased, so `Cat`, ` cat` and `CAT` are one.
    /// `None` when empty, too long or holding control characters.
    pub fn normalize(label: &str) -> Option<String> {
        let t = label.trim();
        let ok = !t.is_empty()
            && t.chars().count() <= MAX_LABEL_CHARS
            && !t.chars().any(char::is_control);
        ok.then(|| t.to_lowercase())
    }

    /// The partition of one user's entries for a label: `{owner}#label#cat`. Every key of
    /// the labels table starts with its owner, so a policy can confine a user to theirs.
    pub fn label_partition(owner: &str, normalized: &str) -> String {
        format!("{owner}#label#{normalized}")
    }

    /// The partition of one user's label counts: `{owner}#counts`.
    pub fn counts_partition(owner: &str) -> String {
        format!("{owner}#counts")
    }

    /// The partition of one user's upload counts: `{owner}#uploads`, one item per UTC day
    /// (`sk` `2026-12-05`) holding [`UPLOADS`] and an `expires_at` for the time to live.
    pub fn uploads_partition(owner: &str) -> String {
        format!("{owner}#uploads")
    }

    /// An upload count's attribute: the images accepted from the user that day.
    pub const UPLOADS: &str = "uploads";

    /// An entry's sort key: newest first is a descending query. RFC 3339 timestamps in UTC
    /// with milliseconds sort as text.
    pub fn entry_sort_key(uploaded_at: &str, image_id: &str) -> String {
        format!("{uploaded_at}#{image_id}")
    }

    /// The count attribute a confidence adds to: `n87` for 87.0 to 87.999. A count at or
    /// above a whole-number confidence N sums `nN` to `n100`.
    pub fn count_attribute(confidence: f64) -> String {
        let bucket = if confidence.is_finite() {
            confidence.floor().clamp(0.0, 100.0) as u8
        } else {
            0
        };
        format!("n{bucket}")
    }

    /// The whole-number confidence a count attribute holds (`n87` is 87).
    pub fn count_bucket(attribute: &str) -> Option<u8> {
        attribute
            .strip_prefix('n')
            .and_then(|n| n.parse::<u8>().ok())
            .filter(|n| *n <= 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_their_own_shape_only() {
        assert_eq!(
            Route::find(&Route::ALL, "GET", "/metadata/abc"),
            Some(Route::GetMetadata)
        );
        assert_eq!(
            Route::find(&Route::ALL, "get", "/metadata"),
            Some(Route::ListMetadata)
        );
        assert_eq!(Route::find(&Route::ALL, "GET", "/metadata/"), None);
        assert_eq!(Route::find(&Route::ALL, "GET", "/metadata/a/b"), None);
        assert_eq!(Route::find(&Route::ALL, "PUT", "/upload"), None);
        assert_eq!(
            Route::find(&[Route::Upload], "POST", "/uploads"),
            None,
            "only the routes given are considered"
        );
        assert_eq!(Route::GetMetadata.key(), "GET /metadata/{id}");
        assert_eq!(
            Route::find(&Route::ALL, "GET", "/labels"),
            Some(Route::ListLabels)
        );
        assert_eq!(Route::find(&Route::ALL, "GET", "/"), Some(Route::Gallery));
        assert_eq!(Route::find(&Route::ALL, "GET", ""), None);
    }

    #[test]
    fn labels_are_searched_case_insensitively_and_counted_by_whole_percent() {
        assert_eq!(index::normalize(" Big Cat "), Some("big cat".into()));
        assert_eq!(index::normalize("CAT"), index::normalize("cat"));
        for bad in ["", "   ", "a\u{0}b", "tab\there"] {
            assert_eq!(index::normalize(bad), None, "{bad:?}");
        }
        assert_eq!(index::normalize(&"x".repeat(101)), None);
        assert!(index::normalize(&"x".repeat(100)).is_some());
        assert_eq!(index::count_attribute(87.999), "n87");
        assert_eq!(index::count_attribute(100.0), "n100");
        assert_eq!(index::count_attribute(-3.0), "n0");
        assert_eq!(index::count_attribute(f64::NAN), "n0");
        assert_eq!(index::count_bucket("n87"), Some(87));
        for bad in ["n101", "x87", "n", "n-1", "name"] {
            assert_eq!(index::count_bucket(bad), None, "{bad}");
        }
        // Newer entries sort after older ones as text.
        assert!(
            index::entry_sort_key("2026-11-30T02:00:00.000Z", "b")
                > index::entry_sort_key("2026-11-29T23:59:59.999Z", "a")
        );
    }

    #[test]
    fn failure_reasons_are_words_of_our_own() {
        for r in FailureReason::ALL {
            assert_eq!(FailureReason::parse(r.as_str()), r);
            let json = serde_json::to_string(&r).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
        }
        // Free text an older version stored never reaches a client.
        assert_eq!(
            FailureReason::parse("not a supported image format (InvalidImageFormatException: x)"),
            FailureReason::Unknown
        );
    }

    #[test]
    fn statuses_round_trip_and_unknown_ones_are_kept_apart() {
        for s in [
            ImageStatus::AwaitingUpload,
            ImageStatus::Processing,
            ImageStatus::Labeled,
            ImageStatus::Failed,
        ] {
            let json = serde_json::to_string(&s).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(ImageStatus::parse(s.as_str()), s);
            assert_eq!(serde_json::from_str::<ImageStatus>(&json).ok(), Some(s));
        }
        assert_eq!(ImageStatus::parse("archived"), ImageStatus::Unknown);
        assert_eq!(
            serde_json::from_str::<ImageStatus>("\"archived\"").ok(),
            Some(ImageStatus::Unknown)
        );
    }
}
