//! The one way long work reports as it goes. The deployer never prints: it tells a
//! [`Progress`], and the caller decides what a person sees. Every method but `step` has a
//! do-nothing default, so a caller implements only what it shows; a closure taking `&str` is a
//! `Progress` that hears the steps.

use crate::cfn::StackEvent;
use crate::smoke::CheckResult;

pub trait Progress {
    /// A step worth a line ("creating the change set", "starting MiniStack", …).
    fn step(&self, message: &str);
    /// A step of one function's build.
    fn function_step(&self, function: &str, message: &str) {
        self.step(&format!("{function}: {message}"));
    }
    /// Cargo finished compiling one more unit (`count` so far).
    fn compiled(&self, _unit: &str, _count: usize) {}
    /// CloudFormation resource work starts: `total` resources are expected to finish.
    fn begin(&self, _total: usize) {}
    /// A new stack event; `done` resources have finished so far.
    fn event(&self, _event: &StackEvent, _done: usize) {}
    /// CloudFormation resource work is over.
    fn end(&self) {}
    /// A smoke check finished.
    fn check(&self, _result: &CheckResult) {}
}

impl<F: Fn(&str)> Progress for F {
    fn step(&self, message: &str) {
        self(message)
    }
}
