//! Genesys Web Services: the typed notification model (and, later, the GWS session and the chat
//! operations). Nothing here knows about sinks or about how notifications travel.

pub mod notification;
