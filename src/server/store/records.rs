//! [`Records`]: the server's records in any [`Store`](super::Store).
