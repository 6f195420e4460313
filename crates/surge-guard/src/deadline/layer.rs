use std::time::Duration;

use tower::Layer;

use super::RequestDeadline;

/// Gives every request a deadline of at most `budget` (see [`RequestDeadline`]).
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    budget: Duration,
}

impl DeadlineLayer {
    pub fn new(budget: Duration) -> Self {
        Self { budget }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = RequestDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestDeadline::new(inner, self.budget)
    }
}
