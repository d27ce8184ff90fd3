//! Actor tests against the fake links.
