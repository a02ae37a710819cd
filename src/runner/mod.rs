//! One runner = one ephemeral LXD instance + one GitHub JIT registration: create, check, remove.
