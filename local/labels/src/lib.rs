//! A local stand-in for Rekognition `DetectLabels`, so the whole pipeline runs without an AWS
//! account and still labels images by their content: the AWS JSON 1.1 protocol (`service`,
//! `server`), a real image model (`model`), pixel statistics (`props`), callers proven by their
//! SigV4 signatures (`auth`) and the local S3, read as the caller, as the source of `S3Object`
//! images (`s3`), and a rate it can hold callers to, with what it has served (`meter`).

pub mod auth;
pub mod meter;
pub mod model;
pub mod props;
pub mod s3;
pub mod server;
pub mod service;
