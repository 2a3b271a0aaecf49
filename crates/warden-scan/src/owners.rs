//! Who owns a path, from a repository's CODEOWNERS (GitHub's rules: the last matching pattern
//! wins; patterns follow .gitignore syntax).

use std::path::Path;

use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// The CODEOWNERS of a repository, if it has one.
pub struct CodeOwners {
    rules: Vec<(Gitignore, Vec<String>)>,
}

impl CodeOwners {
    /// Reads `CODEOWNERS`, `.github/CODEOWNERS` or `docs/CODEOWNERS` under `root` (the first that
    /// exists).
    pub fn load(root: &Path) -> Option<CodeOwners> {
        let file = ["CODEOWNERS", ".github/CODEOWNERS", "docs/CODEOWNERS"]
            .iter()
            .map(|p| root.join(p))
            .find(|p| p.is_file())?;
        let text = std::fs::read_to_string(file).ok()?;
        Some(CodeOwners::parse(root, &text))
    }

    pub fn parse(root: &Path, text: &str) -> CodeOwners {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let Some(pattern) = parts.next() else {
                continue;
            };
            let owners: Vec<String> = parts
                .take_while(|p| !p.starts_with('#'))
                .map(str::to_owned)
                .collect();
            let mut b = GitignoreBuilder::new(root);
            if b.add_line(None, pattern).is_err() {
                continue;
            }
            if let Ok(g) = b.build() {
                rules.push((g, owners));
            }
        }
        CodeOwners { rules }
    }

    /// The owners of `path` (relative to the root), joined with spaces; `None` when no rule
    /// names any.
    pub fn owners_of(&self, path: &str) -> Option<String> {
        for (g, owners) in self.rules.iter().rev() {
            if g.matched_path_or_any_parents(path, false).is_ignore() {
                return (!owners.is_empty()).then(|| owners.join(" "));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_matching_pattern_wins() {
        let o = CodeOwners::parse(
            Path::new("/repo"),
            "# owners\n* @org/everyone\n/deploy/ @org/platform\n*.env @org/security # secrets\n/docs/ \n",
        );
        assert_eq!(o.owners_of("src/main.rs").as_deref(), Some("@org/everyone"));
        assert_eq!(
            o.owners_of("deploy/app.yaml").as_deref(),
            Some("@org/platform")
        );
        assert_eq!(
            o.owners_of("deploy/prod.env").as_deref(),
            Some("@org/security")
        );
        assert_eq!(
            o.owners_of("docs/readme.md"),
            None,
            "an entry without owners unsets them"
        );
    }
}
