//! The one way long work reports as it goes. The deployer never prints: it tells a
//! [`Progress`], and the caller decides what a person sees. Every method but `step` has a
//! do-nothing default, so a caller implements only what it shows; a closure taking `&str` is a
//! `Progress` that hears the steps.
//!
//! This is the bottom layer, so it names no type of a higher one: a layer that has more to
//! tell extends it (`cloud::cfn::StackProgress` hears stack events, `verify::smoke::SmokeProgress`
//! hears checks).

pub trait Progress {
    /// A step worth a line ("creating the change set", "starting MiniStack", …).
    fn step(&self, message: &str);
    /// A step of one function's build.
    fn function_step(&self, function: &str, message: &str) {
        self.step(&format!("{function}: {message}"));
    }
    /// Cargo finished compiling one more unit (`count` so far).
    fn compiled(&self, _unit: &str, _count: usize) {}
    /// Asks the person running the command a yes-or-no question: `None` when there is nobody
    /// to ask (not a terminal), which a caller must take as no.
    fn confirm(&self, _question: &str) -> Option<bool> {
        None
    }
}

impl<F: Fn(&str)> Progress for F {
    fn step(&self, message: &str) {
        self(message)
    }
}
