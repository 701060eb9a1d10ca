//! The watch page's player and the script for sites with their own hls.js are
//! committed built (`seeder/assets/watch.js`, `shoal-hls.js`, embedded in the binary so
//! that `cargo build` needs no Node); this rebuilds them from `web/` and fails if a
//! committed file is not what its sources make (run `npm run build:watch`
//! in web/ after changing them). Needs Node.js and `npm ci` in web/ (CI has both and
//! sets `SHOAL_REQUIRE_NODE`).

use std::path::Path;
use std::process::Command;

#[test]
fn the_committed_player_is_what_its_sources_build() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let web = root.join("../web");
    let node = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    if !node || !web.join("node_modules/esbuild").exists() {
        assert!(
            std::env::var_os("SHOAL_REQUIRE_NODE").is_none(),
            "SHOAL_REQUIRE_NODE is set but Node.js or web/node_modules is missing"
        );
        eprintln!("SKIPPED the watch-page build check: needs Node.js and `npm ci` in web/");
        return;
    }
    let out = std::env::temp_dir().join(format!("shoal-watch-build-{}", std::process::id()));
    let built = Command::new("node").arg("build.mjs").arg(&out).current_dir(&web).output().expect("node runs");
    assert!(built.status.success(), "build.mjs failed: {}", String::from_utf8_lossy(&built.stderr));
    for name in ["watch.js", "shoal-hls.js"] {
        let fresh = std::fs::read(out.join(name)).expect("build.mjs wrote the script");
        let committed = std::fs::read(root.join("assets").join(name)).expect("seeder/assets/ holds the script");
        assert!(
            fresh == committed,
            "seeder/assets/{name} is not what web/watch/ builds ({} bytes against {}): run `npm run build:watch` in web/",
            committed.len(),
            fresh.len()
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}
