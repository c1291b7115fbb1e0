//! The local DetectLabels service through the unmodified `aws-sdk-rekognition` client: real
//! photographs get the right labels, from bytes and from S3 (a stand-in S3 on 127.0.0.1 read
//! with the real S3 client, as the caller), errors arrive as the SDK's typed errors, injected
//! faults are retried by the SDK, and only callers with a valid signature get anything, with
//! S3 reads authorized as the caller.

// Test code: fixtures are ours, so a panic is the right failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_sdk_rekognition::Client;
use aws_sdk_rekognition::config::retry::RetryConfig;
use aws_sdk_rekognition::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_rekognition::error::ProvideErrorMetadata;
use aws_sdk_rekognition::operation::detect_labels::DetectLabelsError;
use aws_sdk_rekognition::primitives::Blob;
use aws_sdk_rekognition::types::{DetectLabelsFeatureName, Image, S3Object};
use local_labels::auth::{Caller, StaticKeys};
use local_labels::meter::Meter;
use local_labels::model::{Model, default_dir};
use local_labels::s3::Emulator;
use local_labels::server::{self, Running};
use local_labels::service::{FaultKind, Faults, Service};

fn model() -> Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL
        .get_or_init(|| Model::load(&default_dir()).unwrap_or_else(|e| panic!("{e}")))
        .clone()
}

fn photo(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../fixtures/images/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A caller S3 lets read, and one it does not.
const READER: &str = "AKIDREADER";
const NO_READ: &str = "AKIDNOREAD";
/// A caller IAM does not allow `rekognition:DetectLabels`.
const NOT_ALLOWED: &str = "AKIDNOTALLOWED";

fn caller(id: &str) -> Caller {
    Caller {
        access_key_id: id.into(),
        secret_access_key: format!("{id}-secret"),
        session_token: None,
        principal_arn: format!("arn:aws:iam::000000000000:user/{id}"),
        may_detect_labels: id != NOT_ALLOWED,
    }
}

/// A minimal path-style S3 on 127.0.0.1: GET /{bucket}/{key} from a map for the reader's
/// key, S3's XML 403 for any other key, S3's XML 404 for a missing object. Counts requests.
fn fake_s3(objects: HashMap<String, Vec<u8>>) -> (u16, Arc<tiny_http::Server>, Arc<AtomicUsize>) {
    let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let port = server.server_addr().to_ip().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let (s, seen) = (server.clone(), count.clone());
    std::thread::spawn(move || {
        while let Ok(req) = s.recv() {
            seen.fetch_add(1, Ordering::SeqCst);
            let path = req
                .url()
                .split('?')
                .next()
                .unwrap_or("")
                .trim_start_matches('/')
                .to_string();
            let signer = req
                .headers()
                .iter()
                .find(|h| h.field.equiv("authorization"))
                .map(|h| h.value.as_str().to_string())
                .unwrap_or_default();
            let error = |code: &str, status: u16| {
                tiny_http::Response::from_string(format!(
                    "<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>{code}</Message></Error>"
                ))
                .with_status_code(status)
            };
            let resp = if !signer.contains(&format!("Credential={READER}/")) {
                error("AccessDenied", 403)
            } else {
                match objects.get(&path) {
                    Some(bytes) => {
                        tiny_http::Response::from_data(bytes.clone()).with_status_code(200)
                    }
                    None => error("NoSuchKey", 404),
                }
            };
            let _ = req.respond(resp);
        }
    });
    (port, server, count)
}

struct Env {
    client: Client,
    /// Dropped on a thread of its own: its S3 client owns a runtime, which may not be dropped
    /// inside a test's async context.
    service: Option<Arc<Service>>,
    running: Option<Running>,
    s3: Arc<tiny_http::Server>,
    s3_requests: Arc<AtomicUsize>,
    port: u16,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop();
        }
        if let Some(service) = self.service.take() {
            let _ = std::thread::spawn(move || drop(service)).join();
        }
        self.s3.unblock();
    }
}

impl Env {
    fn service(&self) -> &Service {
        self.service.as_deref().unwrap()
    }

    /// A client of the service signing with these credentials.
    fn client_as(&self, id: &str, secret: &str, max_attempts: u32) -> Client {
        client(self.port, id, secret, max_attempts)
    }
}

fn client(port: u16, id: &str, secret: &str, max_attempts: u32) -> Client {
    let config = aws_sdk_rekognition::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(id, secret, None, None, "test"))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(max_attempts)
                .with_initial_backoff(Duration::from_millis(1)),
        )
        .build();
    Client::from_conf(config)
}

fn start(faults: Faults, max_attempts: u32) -> Env {
    start_with(faults, max_attempts, server::Config::with_workers(4))
}

fn start_with(faults: Faults, max_attempts: u32, config: server::Config) -> Env {
    start_at_rate(faults, max_attempts, config, (None, None))
}

/// The service admitting at most `tps` calls per second (`None`: no limit), in stub mode with
/// `stub` latency when given.
fn start_at_rate(
    faults: Faults,
    max_attempts: u32,
    config: server::Config,
    (tps, stub): (Option<u32>, Option<Duration>),
) -> Env {
    let objects = HashMap::from([
        ("images/uploads/chelsea".to_string(), photo("chelsea.png")),
        ("images/uploads/coffee".to_string(), photo("coffee.png")),
        ("images/uploads/rocket".to_string(), photo("rocket.jpg")),
        (
            "images/uploads/astronaut".to_string(),
            photo("astronaut.png"),
        ),
        (
            "images/uploads/notes.txt".to_string(),
            b"not an image at all".to_vec(),
        ),
        (
            "images/uploads/huge".to_string(),
            vec![0u8; 16 * 1024 * 1024],
        ),
    ]);
    let (s3_port, s3, s3_requests) = fake_s3(objects);
    let service = Arc::new(Service {
        model: model(),
        faults,
        objects: Box::new(
            Emulator::new(
                &format!("http://127.0.0.1:{s3_port}"),
                None,
                "AKIDLISTER".into(),
                "lister-secret".into(),
            )
            .unwrap(),
        ),
        keys: Box::new(StaticKeys(vec![
            caller(READER),
            caller(NO_READ),
            caller(NOT_ALLOWED),
        ])),
        meter: Meter::new(tps),
        stub,
    });
    let running = server::start_with(service.clone(), "127.0.0.1:0", config).unwrap();
    let port = running.port;
    let reader = caller(READER);
    Env {
        client: client(port, READER, &reader.secret_access_key, max_attempts),
        service: Some(service),
        running: Some(running),
        s3,
        s3_requests,
        port,
    }
}

fn s3_image(key: &str) -> Image {
    Image::builder()
        .s3_object(
            S3Object::builder()
                .bucket("images")
                .name(format!("uploads/{key}"))
                .build(),
        )
        .build()
}

/// The three most confident labels that have parents (every label but a root of the
/// hierarchy, such as "Animal"), lowercased.
async fn top3(client: &Client, image: Image) -> Vec<String> {
    let out = client
        .detect_labels()
        .image(image)
        .max_labels(1000)
        .min_confidence(0.0)
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.label_model_version(),
        Some("efficientnet-lite0-imagenet1k")
    );
    out.labels()
        .iter()
        .filter(|l| !l.parents().is_empty())
        .take(3)
        .map(|l| l.name().unwrap_or("").to_lowercase())
        .collect()
}

/// The error a request for `image` is refused with.
async fn refused(client: &Client, image: Image) -> DetectLabelsError {
    client
        .detect_labels()
        .image(image)
        .send()
        .await
        .unwrap_err()
        .into_service_error()
}

/// The confidence of one label, if present.
async fn confidence_of(client: &Client, image: Image, name: &str) -> Option<f32> {
    let out = client
        .detect_labels()
        .image(image)
        .min_confidence(0.0)
        .send()
        .await
        .unwrap();
    out.labels()
        .iter()
        .find(|l| l.name() == Some(name))
        .and_then(|l| l.confidence())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_photographs_get_the_right_labels_from_s3() {
    let env = start(Faults::none(), 1);
    let cat = top3(&env.client, s3_image("chelsea")).await;
    assert!(cat.iter().any(|l| l.contains("cat")), "chelsea: {cat:?}");
    // The parent label sums its classes: the photo is confidently a cat overall.
    let overall = confidence_of(&env.client, s3_image("chelsea"), "Cat")
        .await
        .unwrap_or(0.0);
    assert!(overall > 80.0, "Cat {overall}");
    let coffee = top3(&env.client, s3_image("coffee")).await;
    assert!(
        coffee
            .iter()
            .any(|l| l.contains("espresso") || l.contains("cup") || l.contains("coffee")),
        "coffee: {coffee:?}"
    );
    let rocket = top3(&env.client, s3_image("rocket")).await;
    assert!(
        rocket
            .iter()
            .any(|l| l.contains("missile") || l.contains("rocket") || l.contains("space shuttle")),
        "rocket: {rocket:?}"
    );
}

/// Every label at or above 55 % (Rekognition's default `MinConfidence`), with its parents.
async fn labels_of(client: &Client, key: &str) -> Vec<(String, f32, Vec<String>)> {
    let out = client
        .detect_labels()
        .image(s3_image(key))
        .min_confidence(55.0)
        .send()
        .await
        .unwrap();
    out.labels()
        .iter()
        .map(|l| {
            (
                l.name().unwrap_or("").to_string(),
                l.confidence().unwrap_or(0.0),
                l.parents()
                    .iter()
                    .filter_map(|p| p.name().map(str::to_string))
                    .collect(),
            )
        })
        .collect()
}

fn parents_of<'a>(labels: &'a [(String, f32, Vec<String>)], name: &str) -> Option<&'a [String]> {
    labels
        .iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, _, p)| p.as_slice())
}

/// Each shipped photograph gets labels a person would agree with, and aggregated labels carry
/// Rekognition's hierarchy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_photograph_gets_labels_a_person_would_agree_with() {
    let env = start(Faults::none(), 1);
    let cat = labels_of(&env.client, "chelsea").await;
    assert_eq!(
        parents_of(&cat, "Cat"),
        Some(
            &[
                "Pet".to_string(),
                "Mammal".to_string(),
                "Animal".to_string()
            ][..]
        ),
        "{cat:?}"
    );
    assert_eq!(parents_of(&cat, "Pet"), Some(&["Animal".to_string()][..]));
    assert_eq!(parents_of(&cat, "Animal"), Some(&[][..]));
    let coffee = labels_of(&env.client, "coffee").await;
    assert!(
        parents_of(&coffee, "Espresso").is_some_and(|p| p.contains(&"Coffee".to_string())),
        "{coffee:?}"
    );
    assert!(parents_of(&coffee, "Drink").is_some(), "{coffee:?}");
    // Missile and projectile are reported as the rocket a person sees on a launch pad.
    let rocket = labels_of(&env.client, "rocket").await;
    assert_eq!(
        parents_of(&rocket, "Rocket"),
        Some(
            &[
                "Spacecraft".to_string(),
                "Vehicle".to_string(),
                "Transportation".to_string()
            ][..]
        ),
        "{rocket:?}"
    );
    assert!(
        !rocket
            .iter()
            .any(|(n, _, _)| n == "Missile" || n == "Weapon"),
        "{rocket:?}"
    );
    // Nothing on the whole portrait reaches 55 %; the crop with the helmet in it does.
    let astronaut = labels_of(&env.client, "astronaut").await;
    assert_eq!(
        parents_of(&astronaut, "Helmet"),
        Some(&["Clothing".to_string()][..]),
        "{astronaut:?}"
    );
    // Exactly the labels docs/label-service.md lists for each photograph.
    let names = |l: &[(String, f32, Vec<String>)]| {
        let mut n: Vec<String> = l.iter().map(|(n, _, _)| n.clone()).collect();
        n.sort();
        n
    };
    assert_eq!(names(&cat), ["Animal", "Cat", "Mammal", "Pet"]);
    assert_eq!(names(&coffee), ["Coffee", "Drink", "Espresso", "Food"]);
    assert_eq!(
        names(&rocket),
        ["Rocket", "Spacecraft", "Transportation", "Vehicle"]
    );
    assert_eq!(names(&astronaut), ["Clothing", "Helmet"]);
    for labels in [&cat, &coffee, &rocket, &astronaut] {
        assert!(
            labels.iter().all(|(_, c, _)| (55.0..=100.0).contains(c)),
            "{labels:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_work_too_and_min_confidence_filters() {
    let env = start(Faults::none(), 1);
    let out = env
        .client
        .detect_labels()
        .image(
            Image::builder()
                .bytes(Blob::new(photo("coffee.png")))
                .build(),
        )
        .max_labels(10)
        .min_confidence(50.0)
        .send()
        .await
        .unwrap();
    let labels = out.labels();
    assert!(!labels.is_empty());
    assert!(labels.iter().all(|l| l.confidence().unwrap_or(0.0) >= 50.0));
    assert!(
        labels
            .windows(2)
            .all(|w| w[0].confidence() >= w[1].confidence()),
        "sorted by confidence"
    );
    let espresso = labels
        .iter()
        .find(|l| l.name() == Some("Espresso"))
        .expect("espresso label");
    let parents: Vec<&str> = espresso.parents().iter().filter_map(|p| p.name()).collect();
    assert!(parents.contains(&"Drink"), "{parents:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_properties_come_from_the_pixels() {
    let env = start(Faults::none(), 1);
    let out = env
        .client
        .detect_labels()
        .image(s3_image("rocket"))
        .features(DetectLabelsFeatureName::ImageProperties)
        .send()
        .await
        .unwrap();
    assert!(
        out.labels().is_empty(),
        "only IMAGE_PROPERTIES was asked for"
    );
    let props = out.image_properties().expect("image properties");
    let q = props.quality().expect("quality");
    for v in [q.brightness(), q.sharpness(), q.contrast()] {
        let v = v.expect("value");
        assert!((0.0..=100.0).contains(&v), "{v}");
    }
    let colors = props.dominant_colors();
    assert!(!colors.is_empty());
    let total: f32 = colors.iter().filter_map(|c| c.pixel_percent()).sum();
    assert!(total > 50.0 && total <= 100.5, "{total}");
    assert!(
        colors[0]
            .hex_code()
            .is_some_and(|h| h.len() == 7 && h.starts_with('#'))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_arrive_as_the_sdks_typed_errors() {
    let env = start(Faults::none(), 1);
    let err = |r: Result<_, aws_sdk_rekognition::error::SdkError<DetectLabelsError, _>>| {
        r.map(|_: aws_sdk_rekognition::operation::detect_labels::DetectLabelsOutput| ())
            .unwrap_err()
            .into_service_error()
    };
    let c = &env.client;
    let e = err(c
        .detect_labels()
        .image(Image::builder().bytes(Blob::new(b"hello".to_vec())).build())
        .send()
        .await);
    assert!(e.is_invalid_image_format_exception(), "{e:?}");
    let e = err(c.detect_labels().image(s3_image("notes.txt")).send().await);
    assert!(e.is_invalid_image_format_exception(), "{e:?}");
    let e = err(c
        .detect_labels()
        .image(
            Image::builder()
                .bytes(Blob::new(vec![0u8; 5 * 1024 * 1024 + 1]))
                .build(),
        )
        .send()
        .await);
    assert!(e.is_image_too_large_exception(), "{e:?}");
    let e = err(c.detect_labels().image(s3_image("huge")).send().await);
    assert!(e.is_image_too_large_exception(), "{e:?}");
    let e = err(c.detect_labels().image(s3_image("missing")).send().await);
    assert!(e.is_invalid_s3_object_exception(), "{e:?}");
    let e = err(c
        .detect_labels()
        .image(s3_image("chelsea"))
        .min_confidence(150.0)
        .send()
        .await);
    assert!(e.is_invalid_parameter_exception(), "{e:?}");
    let e = err(c
        .detect_labels()
        .image(Image::builder().build())
        .send()
        .await);
    assert!(e.is_invalid_parameter_exception(), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_are_retried_by_the_sdk() {
    // Two throttled calls, then success: the SDK's standard retries (3 attempts) absorb them.
    let env = start(Faults::new(FaultKind::Throttling, 2, 0.0, 1), 3);
    let labels = top3(&env.client, s3_image("chelsea")).await;
    assert!(!labels.is_empty());
    // Without retries each kind surfaces as its own error.
    for (kind, check) in [
        (
            FaultKind::Throttling,
            (|e: &DetectLabelsError| e.is_throttling_exception()) as fn(&DetectLabelsError) -> bool,
        ),
        (FaultKind::ProvisionedThroughputExceeded, |e| {
            e.is_provisioned_throughput_exceeded_exception()
        }),
        (FaultKind::InternalServerError, |e| {
            e.is_internal_server_error()
        }),
    ] {
        let env = start(Faults::new(kind, 1, 0.0, 1), 1);
        let e = refused(&env.client, s3_image("chelsea")).await;
        assert!(check(&e), "{kind:?}: {e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_valid_signature_gets_an_answer_and_nothing_is_read_without_one() {
    let env = start(Faults::none(), 1);
    let code = |c: Client| async move {
        let e = refused(&c, s3_image("chelsea")).await;
        e.code().unwrap_or("").to_string()
    };
    assert_eq!(
        code(env.client_as("AKIDSTRANGER", "whatever", 1)).await,
        "UnrecognizedClientException"
    );
    assert_eq!(
        code(env.client_as(READER, "not-the-secret", 1)).await,
        "InvalidSignatureException"
    );
    // A valid signature of a principal IAM does not allow the action.
    let e = refused(
        &env.client_as(NOT_ALLOWED, &caller(NOT_ALLOWED).secret_access_key, 1),
        s3_image("chelsea"),
    )
    .await;
    assert_eq!(e.code(), Some("AccessDeniedException"), "{e:?}");
    assert!(
        e.message()
            .is_some_and(|m| m.contains("not authorized to perform: rekognition:DetectLabels")),
        "{e:?}"
    );
    assert_eq!(
        env.s3_requests.load(Ordering::SeqCst),
        0,
        "a refused request reads nothing"
    );
    // Unsigned: refused before anything is looked at.
    let http = std::net::TcpStream::connect(("127.0.0.1", env.port)).unwrap();
    let status = unsigned_post(http, env.port);
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    assert!(
        status.contains("MissingAuthenticationTokenException"),
        "{status}"
    );
    assert_eq!(env.s3_requests.load(Ordering::SeqCst), 0);
}

fn unsigned_post(mut s: std::net::TcpStream, port: u16) -> String {
    use std::io::{Read, Write};
    let body = r#"{"Image":{"S3Object":{"Bucket":"images","Name":"uploads/chelsea"}}}"#;
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: RekognitionService.DetectLabels\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// An object S3 does not let the caller read gets Rekognition's answer for an object it
/// cannot read with the caller's permissions.
async fn unreadable_to_a_caller_s3_refuses(env: &Env) {
    let denied = caller(NO_READ);
    let e = refused(
        &env.client_as(NO_READ, &denied.secret_access_key, 1),
        s3_image("chelsea"),
    )
    .await;
    assert!(e.is_invalid_s3_object_exception(), "{e:?}");
    assert_eq!(e.message(), Some(local_labels::s3::UNREADABLE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_objects_are_read_as_the_caller() {
    let env = start(Faults::none(), 1);
    unreadable_to_a_caller_s3_refuses(&env).await;
    // The same object for a caller S3 lets read.
    assert!(!top3(&env.client, s3_image("chelsea")).await.is_empty());
}

/// A PNG with a valid header claiming `width` x `height` and no pixel data worth the name: a
/// decoder that trusted the header would allocate width*height*4 bytes.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(data);
        c.extend_from_slice(&crc.finalize().to_be_bytes());
        c
    };
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]); // 8-bit RGBA
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(chunk(b"IEND", &[]));
    png
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_images_are_refused_or_labeled_without_harming_the_service() {
    let env = start(Faults::none(), 1);
    let c = &env.client;
    let send = |bytes: Vec<u8>| {
        c.detect_labels()
            .image(Image::builder().bytes(Blob::new(bytes)).build())
            .send()
    };
    // A decompression bomb: refused from its header, nothing allocated for its pixels.
    let e = send(png_claiming(65_535, 65_535))
        .await
        .map(|_| ())
        .unwrap_err()
        .into_service_error();
    assert!(e.is_image_too_large_exception(), "{e:?}");
    let png = |w: u32, h: u32| {
        let mut out = Vec::new();
        image::DynamicImage::new_rgb8(w, h)
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    };
    // A 1x100000 image, about 300 bytes, was once a 293x29,300,000 resize: now it is over
    // the side limit and refused from its header.
    let e = send(png(1, 100_000))
        .await
        .map(|_| ())
        .unwrap_err()
        .into_service_error();
    assert!(e.is_image_too_large_exception(), "{e:?}");
    // A 1x10000 one is within the limits, and was still a 293x2,930,000 resize (2.5 GB).
    // Cropped first, it is as cheap as any other image.
    if let Err(e) = send(png(1, 10_000)).await {
        panic!("a tall image is labeled: {:?}", e.into_service_error());
    }
    // And the service still answers a real photograph afterwards.
    assert!(send(photo("coffee.png")).await.is_ok());
}

/// Opens a connection that announces a DetectLabels body of `announced` bytes, sends `sent` of
/// them, and then stalls.
fn stalled_client(port: u16, announced: usize, sent: usize) -> std::net::TcpStream {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: RekognitionService.DetectLabels\r\nContent-Length: {announced}\r\n\r\n"
    )
    .unwrap();
    s.write_all(&vec![b'{'; sent]).unwrap();
    s
}

fn raw_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Whether the server has answered on this connection yet (without waiting for it).
fn answered(s: &std::net::TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 1];
    let got = s.peek(&mut buf);
    s.set_nonblocking(false).unwrap();
    !matches!(got, Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_hold_nothing_and_are_answered_when_they_time_out() {
    use std::io::Read;
    // Two workers; eight clients that announce a body and stop sending.
    let config = server::Config {
        io_timeout: Duration::from_secs(3),
        ..server::Config::with_workers(2)
    };
    let env = start_with(Faults::none(), 1, config);
    let slow: Vec<_> = (0..8)
        .map(|_| stalled_client(env.port, 10_000, 10))
        .collect();
    // `/health` and a real request are answered while all eight are held.
    let health = raw_get(env.port, "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let names = top3(&env.client, s3_image("chelsea")).await;
    assert!(names.iter().any(|n| n == "cat"), "{names:?}");
    let held = slow.iter().filter(|s| !answered(s)).count();
    assert_eq!(held, 8, "the slow clients were still being waited on");
    // Each slow client gets Rekognition's error shape once its read times out.
    for mut s in slow {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        assert!(out.contains("RequestTimeoutException"), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_announced_too_large_is_refused_before_it_is_read() {
    use std::io::Read;
    let env = start(Faults::none(), 1);
    // 100 MB announced, 10 bytes sent: the answer comes without waiting for the rest.
    let mut s = stalled_client(env.port, 100_000_000, 10);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut out = vec![0u8; 4096];
    let n = s.read(&mut out).unwrap();
    let out = String::from_utf8_lossy(&out[..n]);
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("ImageTooLargeException"), "{out}");
}

/// A request body, what it is, and the error Rekognition gives it.
type Hostile = (&'static str, String, &'static str);

fn bytes_req(b: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(b);
    format!(r#"{{"Image":{{"Bytes":"{b64}"}}}}"#)
}

fn s3_req(key: &str) -> String {
    format!(r#"{{"Image":{{"S3Object":{{"Bucket":"images","Name":"{key}"}}}}}}"#)
}

/// Bodies that are not a DetectLabels request, or whose Image is neither or both kinds.
fn bad_shapes() -> Vec<Hostile> {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    vec![
        ("empty body", String::new(), "InvalidParameterException"),
        ("null", "null".into(), "InvalidParameterException"),
        ("an array", "[]".into(), "InvalidParameterException"),
        ("a string", r#""Image""#.into(), "InvalidParameterException"),
        ("not JSON", "Image=cat".into(), "InvalidParameterException"),
        ("10,000 nested arrays", deep, "InvalidParameterException"),
        ("no Image", "{}".into(), "InvalidParameterException"),
        (
            "Image is null",
            r#"{"Image":null}"#.into(),
            "InvalidParameterException",
        ),
        (
            "Image has neither",
            r#"{"Image":{}}"#.into(),
            "InvalidParameterException",
        ),
        (
            "Image has both",
            r#"{"Image":{"Bytes":"AAAA","S3Object":{"Bucket":"images","Name":"uploads/chelsea"}}}"#
                .into(),
            "InvalidParameterException",
        ),
        (
            "Image is a string",
            r#"{"Image":"cat.png"}"#.into(),
            "InvalidParameterException",
        ),
    ]
}

/// Inline bytes that are not base64, not an image, or too large.
fn bad_bytes() -> Vec<Hostile> {
    let too_big = format!(r#"{{"Image":{{"Bytes":"{}"}}}}"#, "A".repeat(7_000_000));
    vec![
        (
            "Bytes not base64",
            r#"{"Image":{"Bytes":"@@@@"}}"#.into(),
            "InvalidParameterException",
        ),
        (
            "Bytes a number",
            r#"{"Image":{"Bytes":42}}"#.into(),
            "InvalidParameterException",
        ),
        (
            "Bytes empty",
            r#"{"Image":{"Bytes":""}}"#.into(),
            "InvalidImageFormatException",
        ),
        (
            "Bytes of text",
            bytes_req(b"just some text"),
            "InvalidImageFormatException",
        ),
        (
            "Bytes of a GIF",
            bytes_req(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"),
            "InvalidImageFormatException",
        ),
        (
            "Bytes of half a PNG",
            bytes_req(&photo("chelsea.png")[..1000]),
            "InvalidImageFormatException",
        ),
        ("Bytes over 5 MB", too_big, "ImageTooLargeException"),
        (
            "Bytes of a 65535x65535 header",
            bytes_req(&png_claiming(65_535, 65_535)),
            "ImageTooLargeException",
        ),
    ]
}

/// A good image with a bad parameter beside it (`cat` is its request).
fn bad_parameters(cat: &str) -> Vec<Hostile> {
    vec![
        (
            "MaxLabels negative",
            cat.replacen('{', r#"{"MaxLabels":-1,"#, 1),
            "InvalidParameterException",
        ),
        (
            "MaxLabels a string",
            cat.replacen('{', r#"{"MaxLabels":"ten","#, 1),
            "InvalidParameterException",
        ),
        (
            "MinConfidence 101",
            cat.replacen('{', r#"{"MinConfidence":101,"#, 1),
            "InvalidParameterException",
        ),
        (
            "MinConfidence negative",
            cat.replacen('{', r#"{"MinConfidence":-0.5,"#, 1),
            "InvalidParameterException",
        ),
        (
            "an unknown feature",
            cat.replacen('{', r#"{"Features":["FACES"],"#, 1),
            "InvalidParameterException",
        ),
        (
            "Features not a list",
            cat.replacen('{', r#"{"Features":"GENERAL_LABELS","#, 1),
            "InvalidParameterException",
        ),
    ]
}

/// S3 objects that are missing, not images or too large.
fn bad_objects() -> Vec<Hostile> {
    vec![
        (
            "S3Object without Name",
            r#"{"Image":{"S3Object":{"Bucket":"images"}}}"#.into(),
            "InvalidParameterException",
        ),
        (
            "S3Object that does not exist",
            s3_req("uploads/nothing-here"),
            "InvalidS3ObjectException",
        ),
        (
            "S3Object that is text",
            s3_req("uploads/notes.txt"),
            "InvalidImageFormatException",
        ),
        (
            "S3Object over 15 MB",
            s3_req("uploads/huge"),
            "ImageTooLargeException",
        ),
        (
            "S3Object in a bucket that does not exist",
            r#"{"Image":{"S3Object":{"Bucket":"nobody","Name":"uploads/chelsea"}}}"#.into(),
            "InvalidS3ObjectException",
        ),
    ]
}

/// Hostile DetectLabels request bodies (after a valid signature), each with the exact error
/// Rekognition's shape gives it; the service keeps answering afterwards.
#[test]
fn hostile_requests_get_their_exact_error() {
    let env = start(Faults::none(), 1);
    let cat = bytes_req(&photo("chelsea.png"));
    let cases = [
        bad_shapes(),
        bad_bytes(),
        bad_parameters(&cat),
        bad_objects(),
    ]
    .concat();
    let reader = caller(READER);
    let mut wrong = Vec::new();
    for (name, body, want) in &cases {
        match env.service().detect_labels(&reader, body.as_bytes()) {
            Ok(_) => wrong.push(format!("{name}: answered 200, want {want}")),
            Err(e) if e.kind != *want => {
                wrong.push(format!("{name}: {} ({}), want {want}", e.kind, e.message))
            }
            Err(e) => assert_eq!(e.status, 400, "{name}"),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // A well-formed request still works, both ways.
    assert!(env.service().detect_labels(&reader, cat.as_bytes()).is_ok());
    assert!(
        env.service()
            .detect_labels(&reader, s3_req("uploads/chelsea").as_bytes())
            .is_ok()
    );
}

#[test]
fn connections_over_the_limit_get_a_throttling_answer() {
    let config = server::Config {
        max_connections: 1,
        ..server::Config::with_workers(1)
    };
    let env = start_with(Faults::none(), 1, config);
    // One idle connection holds the only slot.
    let holder = std::net::TcpStream::connect(("127.0.0.1", env.port)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let answer = raw_get(env.port, "/health");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("ThrottlingException"), "{answer}");
    // Released, the slot serves again.
    drop(holder);
    std::thread::sleep(Duration::from_millis(200));
    let answer = raw_get(env.port, "/health");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Above `--tps` a call gets Rekognition's over-quota error, and `GET /stats` counts what was
/// served, refused and the peaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_above_the_rate_are_refused_as_over_quota_and_counted() {
    let env = start_at_rate(
        Faults::none(),
        1,
        server::Config::with_workers(4),
        (Some(2), None),
    );
    let calls = (0..8).map(|_| {
        let c = env.client.clone();
        tokio::spawn(async move {
            c.detect_labels()
                .image(
                    Image::builder()
                        .bytes(Blob::new(photo("coffee.png")))
                        .build(),
                )
                .send()
                .await
        })
    });
    let mut refused = 0;
    for call in calls.collect::<Vec<_>>() {
        if let Err(e) = call.await.unwrap() {
            let e = e.into_service_error();
            assert!(e.is_provisioned_throughput_exceeded_exception(), "{e:?}");
            refused += 1;
        }
    }
    let stats = raw_get(env.port, "/stats");
    let body: serde_json::Value =
        serde_json::from_str(stats.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["throttled"], refused, "{body}");
    assert_eq!(body["served"], 8 - refused, "{body}");
    assert!(
        refused >= 4,
        "8 calls within a second or two at 2 per second: {body}"
    );
    assert!(body["peak_per_second"].as_u64().unwrap() <= 2, "{body}");
    assert!(body["peak_in_flight"].as_u64().unwrap() >= 1, "{body}");
    assert_eq!(body["tps"], 2);
}

/// Stub mode answers with a label nobody takes for the model's, after its latency, and keeps
/// the S3 read as the caller real.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stub_mode_answers_without_the_model_and_still_reads_as_the_caller() {
    let latency = Duration::from_millis(50);
    let env = start_at_rate(
        Faults::none(),
        1,
        server::Config::with_workers(4),
        (None, Some(latency)),
    );
    let started = std::time::Instant::now();
    let out = env
        .client
        .detect_labels()
        .image(s3_image("chelsea"))
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() >= latency);
    let names: Vec<&str> = out.labels().iter().filter_map(|l| l.name()).collect();
    assert_eq!(names, [local_labels::service::STUB_LABEL]);
    assert_eq!(out.label_model_version(), Some("stub"));
    unreadable_to_a_caller_s3_refuses(&env).await;
}
