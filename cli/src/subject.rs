//! NATS subject filters (`*` matches one token, a final `>` one or more), applied client-side to
//! the original subjects of dead letters.

use crate::error::CliError;

/// A checked subject filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectFilter {
    tokens: Vec<String>,
}

impl SubjectFilter {
    /// Parses `filter`, refusing empty tokens, wildcards inside tokens and a `>` before the end.
    pub fn parse(filter: &str) -> Result<Self, CliError> {
        let invalid = |reason| CliError::InvalidSubjectFilter {
            filter: filter.to_owned(),
            reason,
        };
        let tokens: Vec<String> = filter.split('.').map(str::to_owned).collect();
        for (i, token) in tokens.iter().enumerate() {
            if token.is_empty() {
                return Err(invalid("it has an empty token"));
            }
            if token.chars().any(char::is_whitespace) {
                return Err(invalid("subjects contain no whitespace"));
            }
            if token != "*" && token != ">" && (token.contains('*') || token.contains('>')) {
                return Err(invalid("`*` and `>` must be whole tokens"));
            }
            if token == ">" && i + 1 != tokens.len() {
                return Err(invalid("`>` may only be the last token"));
            }
        }
        Ok(SubjectFilter { tokens })
    }

    /// Whether `subject` matches.
    pub fn matches(&self, subject: &str) -> bool {
        let mut subject_tokens = subject.split('.');
        for filter_token in &self.tokens {
            match (filter_token.as_str(), subject_tokens.next()) {
                (">", Some(_)) => return true,
                (_, None) => return false,
                ("*", Some(_)) => {}
                (literal, Some(token)) if literal == token => {}
                _ => return false,
            }
        }
        subject_tokens.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::SubjectFilter;

    fn matches(filter: &str, subject: &str) -> bool {
        SubjectFilter::parse(filter).unwrap().matches(subject)
    }

    #[test]
    fn wildcards_match_as_in_nats() {
        assert!(matches(
            "bank.account.a1.deposited",
            "bank.account.a1.deposited"
        ));
        assert!(matches(
            "bank.account.*.deposited",
            "bank.account.a1.deposited"
        ));
        assert!(matches("bank.>", "bank.account.a1.deposited"));
        assert!(!matches("bank.>", "bank"));
        assert!(!matches("bank.account.*", "bank.account.a1.deposited"));
        assert!(!matches(
            "bank.account.a1.deposited.x",
            "bank.account.a1.deposited"
        ));
        assert!(!matches("bank.account.a2.*", "bank.account.a1.deposited"));
    }

    #[test]
    fn malformed_filters_are_refused() {
        for filter in ["", "bank..x", "bank.>.x", "bank.acc*", "bank. x"] {
            assert!(SubjectFilter::parse(filter).is_err(), "{filter:?}");
        }
    }
}
