//! Juju event handlers: map each event and action onto the runner manager.
