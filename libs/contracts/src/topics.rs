/// Bounded contexts that own an event topic and a command topic.
pub const ISSUANCE: &str = "issuance";
pub const ACTIVATION: &str = "activation";
pub const DOMAIN: &str = "domain";
pub const GRANTS: &str = "grants";

/// Topic names under a configurable prefix (default `licensing`), so that
/// several deployments — or parallel tests — share one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>.<name>` for a name as written in `schemas/topics.toml`.
    pub fn named(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    pub fn events(&self, context: &str) -> String {
        self.named(&format!("{context}.events"))
    }

    pub fn commands(&self, context: &str) -> String {
        self.named(&format!("{context}.commands"))
    }

    /// Commands only administrators may send (products, policies).
    pub fn admin_commands(&self, context: &str) -> String {
        self.named(&format!("{context}.admin-commands"))
    }

    /// The relay of a context's checkpoint topic (one partition).
    pub fn relay_checkpoints(&self, context: &str) -> String {
        self.named(&format!("{context}.relay-checkpoints"))
    }

    /// Every service's signed checkpoints (key = context).
    pub fn checkpoints(&self) -> String {
        self.named("checkpoints")
    }

    pub fn outcomes(&self) -> String {
        self.named("command-outcomes")
    }

    pub fn dlq(topic: &str) -> String {
        format!("{topic}.dlq")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix() {
        let t = Topics::new("licensing");
        assert_eq!(t.events(ISSUANCE), "licensing.issuance.events");
        assert_eq!(t.commands(ISSUANCE), "licensing.issuance.commands");
        assert_eq!(t.outcomes(), "licensing.command-outcomes");
        assert_eq!(
            Topics::dlq(&t.commands(ISSUANCE)),
            "licensing.issuance.commands.dlq"
        );
    }
}
