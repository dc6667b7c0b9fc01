//! Replays every committed fuzz input on stable: `fuzz/corpus/<target>/` (the corpora the
//! fuzzers grew, minimised) and `fuzz/regressions/<target>/` (every crash a fuzzer found, kept
//! after its fix), each through the same target function cargo-fuzz runs.

use std::path::Path;

#[test]
fn every_committed_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut replayed = 0;
    for (target, run) in fedplane_fuzz::TARGETS {
        let mut inputs = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
                continue;
            };
            for entry in entries {
                let path = entry.expect("a directory entry").path();
                let data = std::fs::read(&path).expect("an input");
                let outcome = std::panic::catch_unwind(|| run(&data));
                assert!(outcome.is_ok(), "{target}: {} fails", path.display());
                inputs += 1;
            }
        }
        assert!(
            inputs > 0,
            "{target}: no committed input under fuzz/corpus or fuzz/regressions"
        );
        replayed += inputs;
    }
    eprintln!(
        "replayed {replayed} inputs through {} targets",
        fedplane_fuzz::TARGETS.len()
    );
}
