use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::{Sleep, sleep_until};

use super::{Deadline, DeadlineExpired};
use crate::BoxError;

pin_project! {
    /// The inner call racing its deadline, or a rejection decided up front.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Running { #[pin] inner: F, #[pin] sleep: Sleep, deadline: Deadline },
        Rejected { error: Option<BoxError> },
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn running(inner: F, deadline: Deadline) -> Self {
        Self { state: State::Running { inner, sleep: sleep_until(deadline.instant()), deadline } }
    }

    pub(super) fn rejected(error: BoxError) -> Self {
        Self { state: State::Rejected { error: Some(error) } }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Rejected { error } => {
                Poll::Ready(Err(error.take().unwrap_or_else(|| Box::new(DeadlineExpired))))
            }
            StateProj::Running { inner, sleep, deadline } => {
                // The handler sees its deadline (`deadline::current`) while polled.
                if let Poll::Ready(result) = super::poll_within(*deadline, || inner.poll(cx)) {
                    return Poll::Ready(result.map_err(Into::into));
                }
                sleep.poll(cx).map(|()| Err(DeadlineExpired.into()))
            }
        }
    }
}
