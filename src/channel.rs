//! Bayeux channel names and patterns: validation, and the glob rules used to dispatch a
//! delivery (which always arrives on its concrete channel) to the subscription that asked for it.
//! A crate-level primitive: the Bayeux protocol dispatches with it, the configuration validates
//! subscriptions with it, and the sinks' filters match an event's channel with it.
//!
//! `/foo/*` matches exactly one more segment (`/foo/bar`, not `/foo` nor `/foo/bar/baz`);
//! `/foo/**` matches one or more (`/foo/bar`, `/foo/bar/baz`). A glob may only be the whole last
//! segment (`reference/bayeux.md` §1.5).

/// Why a channel name or pattern is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The name does not start with `/` or has an empty segment.
    #[error("channel `{0}` must start with `/` and have no empty segment")]
    Shape(String),
    /// A `*` appears anywhere but as the whole last segment.
    #[error("channel `{0}`: a glob (`*` or `**`) may only be the whole last segment")]
    Glob(String),
    /// A meta channel cannot be subscribed to.
    #[error("channel `{0}`: /meta/ channels are protocol-only and cannot be subscribed to")]
    Meta(String),
}

/// Checks that `pattern` is a subscribable channel name or glob.
pub fn validate_pattern(pattern: &str) -> Result<(), ChannelError> {
    check_shape(pattern)?;
    if pattern.starts_with("/meta/") {
        return Err(ChannelError::Meta(pattern.to_owned()));
    }
    Ok(())
}

/// The shape rules of a name or glob (no allocation: this runs for every delivery).
fn check_shape(pattern: &str) -> Result<(), ChannelError> {
    let rest = pattern
        .strip_prefix('/')
        .ok_or_else(|| ChannelError::Shape(pattern.to_owned()))?;
    let mut segments = rest.split('/').peekable();
    while let Some(seg) = segments.next() {
        if seg.is_empty() {
            return Err(ChannelError::Shape(pattern.to_owned()));
        }
        let glob = seg == "*" || seg == "**";
        let last = segments.peek().is_none();
        if (seg.contains('*') && !glob) || (glob && !last) {
            return Err(ChannelError::Glob(pattern.to_owned()));
        }
    }
    Ok(())
}

/// Whether the concrete `channel` matches `pattern` (a name, or a name ending in `*` or `**`).
/// A pattern that breaks the shape rules is compared literally. Pure; never panics.
pub fn matches(pattern: &str, channel: &str) -> bool {
    if check_shape(pattern).is_err() {
        return pattern == channel;
    }
    if let Some(prefix) = pattern.strip_suffix("/**") {
        return channel
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|rest| !rest.is_empty() && rest.split('/').all(|s| !s.is_empty()));
    }
    if let Some(prefix) = pattern.strip_suffix("/*") {
        return channel
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
    }
    pattern == channel
}

/// Whether `channel` is a protocol channel (`/meta/...`).
pub fn is_meta(channel: &str) -> bool {
    channel.starts_with("/meta/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_star_matches_exactly_one_segment() {
        assert!(matches("/v2/me/*", "/v2/me/chats"));
        assert!(!matches("/v2/me/*", "/v2/me"));
        assert!(!matches("/v2/me/*", "/v2/me/chats/x"));
        assert!(!matches("/v2/me/*", "/v2/mee/chats"));
        assert!(!matches("/v2/me/*", "/v2/me/"));
    }

    #[test]
    fn double_star_matches_one_or_more_segments() {
        assert!(matches("/v2/**", "/v2/me"));
        assert!(matches("/v2/**", "/v2/me/chats"));
        assert!(!matches("/v2/**", "/v2"));
        assert!(!matches("/v2/**", "/v22/me"));
        assert!(matches("/**", "/anything/at/all"));
    }

    #[test]
    fn plain_names_match_only_themselves() {
        assert!(matches("/v2/me/chats", "/v2/me/chats"));
        assert!(!matches("/v2/me/chats", "/v2/me/chats/x"));
        assert!(!matches("/v2/me/chats", "/v2/me/calls"));
    }

    #[test]
    fn patterns_are_validated() {
        for ok in ["/v2/me/chats", "/v2/me/*", "/v2/**", "/**", "/service/x"] {
            assert_eq!(validate_pattern(ok), Ok(()), "{ok}");
        }
        assert!(matches!(
            validate_pattern("v2/me"),
            Err(ChannelError::Shape(_))
        ));
        assert!(matches!(
            validate_pattern("/v2//me"),
            Err(ChannelError::Shape(_))
        ));
        assert!(matches!(
            validate_pattern("/v2/me/"),
            Err(ChannelError::Shape(_))
        ));
        assert!(matches!(
            validate_pattern("/v2/*/chats"),
            Err(ChannelError::Glob(_))
        ));
        assert!(matches!(
            validate_pattern("/v2/me*"),
            Err(ChannelError::Glob(_))
        ));
        assert!(matches!(
            validate_pattern("/meta/connect"),
            Err(ChannelError::Meta(_))
        ));
    }
}
