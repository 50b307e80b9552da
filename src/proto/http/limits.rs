//! What a request or a response may hold before it is refused.

/// Bounds on one request, or one response: [`RequestDecoder`](super::RequestDecoder) refuses
/// a request ([`ResponseDecoder`](super::ResponseDecoder) a response, with the
/// [`BadResponse`](super::BadResponse) of the same name) as soon as it passes one, so a
/// connection never buffers more than these and one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest head (request or status line and headers), and largest trailer section of a
    /// chunked body, in bytes: [`HttpError::HeadTooLarge`](super::HttpError::HeadTooLarge)
    /// (431) past it. Default 8 KiB.
    pub max_head: usize,
    /// Most headers in one head (at most 128): 431 past it. Default 64.
    pub max_headers: usize,
    /// Largest body, announced by `Content-Length` or summed over chunks:
    /// [`HttpError::BodyTooLarge`](super::HttpError::BodyTooLarge) (413) as soon as it is
    /// known to be passed. Default 1 MiB.
    pub max_body: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_head: 8 * 1024,
            max_headers: 64,
            max_body: 1024 * 1024,
        }
    }
}
