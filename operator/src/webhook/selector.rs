//! Label-selector matching with Kubernetes semantics (an empty selector selects everything).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A selector the apiserver would reject; such a monitor selects nothing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    /// The operator is not one of `In`, `NotIn`, `Exists`, `DoesNotExist`.
    #[error(
        "selector requirement on {key:?} has operator {operator:?}, expected In, NotIn, Exists or DoesNotExist"
    )]
    UnknownOperator {
        /// The requirement's key.
        key: String,
        /// The operator given.
        operator: String,
    },
    /// `In`/`NotIn` without values, or `Exists`/`DoesNotExist` with values.
    #[error(
        "selector requirement on {key:?} with operator {operator} has {count} values, expected {expected}"
    )]
    BadValues {
        /// The requirement's key.
        key: String,
        /// The operator given.
        operator: String,
        /// How many values were given.
        count: usize,
        /// What the operator needs.
        expected: &'static str,
    },
}

/// Whether `selector` selects an object with `labels`.
///
/// # Errors
/// [`SelectorError`] when a requirement is malformed.
pub fn matches(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> Result<bool, SelectorError> {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let mut selected = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    for requirement in selector.match_expressions.iter().flatten() {
        let key = &requirement.key;
        let values = requirement.values.as_deref().unwrap_or_default();
        let bad_values = |expected| SelectorError::BadValues {
            key: key.clone(),
            operator: requirement.operator.clone(),
            count: values.len(),
            expected,
        };
        let label = labels.get(key);
        let holds = match requirement.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => return Err(bad_values("at least one")),
            "Exists" | "DoesNotExist" if !values.is_empty() => return Err(bad_values("none")),
            "In" => label.is_some_and(|l| values.contains(l)),
            "NotIn" => !label.is_some_and(|l| values.contains(l)),
            "Exists" => label.is_some(),
            "DoesNotExist" => label.is_none(),
            other => {
                return Err(SelectorError::UnknownOperator {
                    key: key.clone(),
                    operator: other.to_owned(),
                });
            }
        };
        selected &= holds;
    }
    Ok(selected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.to_owned(),
            operator: operator.to_owned(),
            values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    #[test]
    fn empty_selector_selects_everything() {
        assert_eq!(matches(&LabelSelector::default(), None), Ok(true));
    }

    #[test]
    fn match_labels_and_expressions_must_all_hold() {
        let selector = LabelSelector {
            match_labels: Some(labels(&[("app", "mnist")])),
            match_expressions: Some(vec![
                requirement("fl-role", "In", &["client", "server"]),
                requirement("canary", "DoesNotExist", &[]),
                requirement("tier", "NotIn", &["test"]),
            ]),
        };
        let pod = labels(&[("app", "mnist"), ("fl-role", "client")]);
        assert_eq!(matches(&selector, Some(&pod)), Ok(true));
        let canary = labels(&[("app", "mnist"), ("fl-role", "client"), ("canary", "1")]);
        assert_eq!(matches(&selector, Some(&canary)), Ok(false));
        let other = labels(&[("app", "cifar"), ("fl-role", "client")]);
        assert_eq!(matches(&selector, Some(&other)), Ok(false));
    }

    #[test]
    fn malformed_requirement_is_an_error_naming_the_key() {
        let selector = LabelSelector {
            match_expressions: Some(vec![requirement("app", "Matches", &["x"])]),
            ..Default::default()
        };
        let error = matches(&selector, None).expect_err("unknown operator");
        assert!(error.to_string().contains("\"app\""), "{error}");
        let selector = LabelSelector {
            match_expressions: Some(vec![requirement("app", "In", &[])]),
            ..Default::default()
        };
        assert!(matches(&selector, None).is_err());
    }
}
