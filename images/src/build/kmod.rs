//! Kernel modules for the initramfs: the closure of the modules the image needs over
//! `modules.dep` (as `depmod` writes it), in load order (dependencies first).

use std::collections::{BTreeMap, BTreeSet};

use super::BuildError;

/// `modules.dep`, parsed: module path → the paths it depends on.
#[derive(Debug, Clone, Default)]
pub struct ModulesDep {
    deps: BTreeMap<String, Vec<String>>,
}

/// A module's name as `modprobe` spells it (`dm-verity` and `dm_verity` are one module),
/// from its path.
#[must_use]
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let base = file
        .strip_suffix(".ko.xz")
        .or_else(|| file.strip_suffix(".ko.zst"))
        .or_else(|| file.strip_suffix(".ko.gz"))
        .or_else(|| file.strip_suffix(".ko"))
        .unwrap_or(file);
    base.replace('-', "_")
}

impl ModulesDep {
    /// Parses `modules.dep` text.
    ///
    /// # Errors
    /// A line without `:`.
    pub fn parse(text: &str) -> Result<Self, BuildError> {
        let mut deps = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (module, rest) = line.split_once(':').ok_or_else(|| {
                BuildError::Invalid(format!("modules.dep line {}: no ':'", n + 1))
            })?;
            deps.insert(
                module.trim().to_owned(),
                rest.split_whitespace().map(str::to_owned).collect(),
            );
        }
        Ok(Self { deps })
    }

    fn path_of(&self, name: &str) -> Option<&String> {
        let want = name.replace('-', "_");
        self.deps.keys().find(|p| module_name(p) == want)
    }

    /// The module paths to load, dependencies first, for the `required` module names
    /// (each must exist) and the `optional` ones (skipped when absent, as when the
    /// kernel has them built in).
    ///
    /// # Errors
    /// A required module that `modules.dep` does not list, or a dependency cycle.
    pub fn load_order(
        &self,
        required: &[&str],
        optional: &[&str],
    ) -> Result<Vec<String>, BuildError> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for name in required {
            let path = self.path_of(name).ok_or_else(|| {
                BuildError::Invalid(format!(
                    "kernel module {name} is neither in modules.dep nor built in"
                ))
            })?;
            self.visit(path, &mut done, &mut BTreeSet::new(), &mut order)?;
        }
        for name in optional {
            if let Some(path) = self.path_of(name) {
                self.visit(path, &mut done, &mut BTreeSet::new(), &mut order)?;
            }
        }
        Ok(order)
    }

    fn visit(
        &self,
        path: &str,
        done: &mut BTreeSet<String>,
        stack: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) -> Result<(), BuildError> {
        if done.contains(path) {
            return Ok(());
        }
        if !stack.insert(path.to_owned()) {
            return Err(BuildError::Invalid(format!(
                "kernel module dependency cycle at {path}"
            )));
        }
        // modules.dep lists every (transitive) dependency; visit them first anyway so the
        // order holds for hand-written files too.
        let deps = self.deps.get(path).cloned().unwrap_or_default();
        for dep in deps.iter().rev() {
            self.visit(dep, done, stack, order)?;
        }
        stack.remove(path);
        done.insert(path.to_owned());
        order.push(path.to_owned());
        Ok(())
    }
}

/// Whether `modules.builtin` (text) lists the module.
#[must_use]
pub fn is_builtin(builtin: &str, name: &str) -> bool {
    let want = name.replace('-', "_");
    builtin.lines().any(|l| module_name(l.trim()) == want)
}
