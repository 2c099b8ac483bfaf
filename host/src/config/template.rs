//! Spin's `{{ variable }}` templates, parsed once at load.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Variable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("`{text}` has a `{{{{` without its `}}}}`"))?;
            let name = after[..end].trim();
            if !crate::config::is_variable_name(name) {
                return Err(format!(
                    "`{text}`: `{name}` is not a variable name (lowercase letters, digits, `_`)"
                ));
            }
            parts.push(Part::Variable(name.to_owned()));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// The variables this template refers to.
    pub fn references(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Variable(v) => Some(v.as_str()),
            Part::Literal(_) => None,
        })
    }

    pub fn render<'a>(&self, value_of: impl Fn(&str) -> &'a str) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Literal(l) => l.as_str(),
                Part::Variable(v) => value_of(v),
            })
            .collect()
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.parts {
            match p {
                Part::Literal(l) => f.write_str(l)?,
                Part::Variable(v) => write!(f, "{{{{ {v} }}}}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_literals_and_variables() {
        let t = Template::parse("Bearer {{token}} for {{ user_name }}").unwrap();
        assert_eq!(t.references().collect::<Vec<_>>(), ["token", "user_name"]);
        let out = t.render(|n| if n == "token" { "abc" } else { "ann" });
        assert_eq!(out, "Bearer abc for ann");
        assert_eq!(t.to_string(), "Bearer {{ token }} for {{ user_name }}");
    }

    #[test]
    fn malformed_templates_are_refused() {
        assert!(Template::parse("{{ open").unwrap_err().contains("without"));
        assert!(
            Template::parse("{{ Bad-Name }}")
                .unwrap_err()
                .contains("not a variable")
        );
    }
}
