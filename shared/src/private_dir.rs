//! Directories that hold secrets or data (the control plane's data dir, the development
//! PKI, the data plane's usage spill): created 0700, so only the service's user reads
//! what is inside, whatever the umask. An existing directory is left as the operator
//! made it.

use std::path::Path;

/// Creates `dir` and any missing parents with mode 0700.
pub fn create(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    #[cfg(unix)]
    #[test]
    fn created_0700_with_its_parents() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("a/b");
        super::create(&dir).unwrap();
        for d in [base.path().join("a"), dir.clone()] {
            let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        super::create(&dir).unwrap();
    }
}
