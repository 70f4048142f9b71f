//! Bad patches: each is refused with a clear error (hotctl exits non-zero with one `hotctl: ...`
//! line naming the problem; the agent answers a stable error code on the socket), a dry run is
//! refused the same way (it loads the file in the throwaway probe, so even what only the loader can
//! tell is caught), and the target keeps running unchanged.

use crate::common::{assert_unchanged, basic, basic_refuses, refusals_keep_generation_1, refused};
use hotagent_tests::files::elf;
use hotagent_tests::protocol::ErrorCode;
use hotagent_tests::*;
use std::path::Path;

const CFG: Config = Config::DEFAULT;

/// The hotctl arguments a bad file is offered with: none (a plain reload).
const PLAIN: &[&[&str]] = &[&[]];
/// None, then `--no-probe`: the check of the file catches it, not the probe, so it is refused
/// without the probe too.
const ALSO_WITHOUT_PROBE: &[&[&str]] = &[&[], &["--no-probe"]];

/// Starts `basic` and asserts that the file `name`, made by `make` in a fresh scratch folder (it
/// may leave it missing), is [`refused`] with each argument list of `extras`: with one of `codes`,
/// the message naming the file and each of `mentions`. Returns the target for more checks.
#[track_caller]
fn file_refused(
    name: &str,
    make: impl FnOnce(&Path),
    extras: &[&[&str]],
    codes: &[ErrorCode],
    mentions: &[&str],
) -> Target {
    let mut t = basic(CFG);
    let dir = scratch();
    let path = dir.path().join(name);
    make(&path);
    let mentions: Vec<&str> = std::iter::once(name)
        .chain(mentions.iter().copied())
        .collect();
    for extra in extras {
        refused(&mut t, &path, extra, codes, &mentions);
    }
    t
}

/// A maker for [`file_refused`]: a copy of libfoo v2, edited by `edit`.
fn v2_edited(edit: impl FnOnce(&mut Vec<u8>)) -> impl FnOnce(&Path) {
    move |path| {
        let mut bytes = std::fs::read(CFG.path("libfoo_v2.so")).unwrap();
        edit(&mut bytes);
        write_atomic(path, &bytes);
    }
}

/// A maker for [`file_refused`]: a copy of libfoo v2 with some bytes replaced (see
/// [`patched_copy`]).
fn v2_patched<'a>(patches: &'a [(usize, &'a [u8])]) -> impl FnOnce(&Path) + 'a {
    move |path| patched_copy(&CFG.path("libfoo_v2.so"), path, patches)
}

#[test]
fn missing_file() {
    file_refused(
        "libfoo_nope.so",
        |_| {},
        PLAIN,
        &[ErrorCode::FileUnreadable],
        &[],
    );
}

#[test]
fn directory() {
    file_refused(
        "libfoo_dir.so",
        |path| std::fs::create_dir(path).unwrap(),
        PLAIN,
        &[ErrorCode::FileUnreadable],
        &[],
    );
}

#[test]
fn empty_file() {
    file_refused(
        "libfoo_empty.so",
        |path| write_atomic(path, b""),
        PLAIN,
        &[ErrorCode::BadElf, ErrorCode::FileUnreadable],
        &[],
    );
}

#[test]
fn text_file() {
    file_refused(
        "libfoo_text.so",
        |path| write_atomic(path, b"this is not a shared object\njust text\n"),
        PLAIN,
        &[ErrorCode::BadElf],
        &[],
    );
}

#[test]
fn truncated_elf_header() {
    file_refused(
        "libfoo_trunc_header.so",
        |path| truncated_copy(&CFG.path("libfoo_v2.so"), path, 40),
        PLAIN,
        &[ErrorCode::BadElf],
        &[],
    );
}

#[test]
fn truncated_elf_half() {
    let src = CFG.path("libfoo_v2.so");
    let len = std::fs::metadata(&src).unwrap().len() as usize;
    file_refused(
        "libfoo_trunc_half.so",
        |path| truncated_copy(&src, path, len / 2),
        PLAIN,
        &[ErrorCode::BadElf, ErrorCode::LoadFailed],
        &[],
    );
}

#[test]
fn corrupted_program_headers() {
    // e_phoff far beyond the end of the file.
    let far = 0x7fff_ffff_0000u64.to_le_bytes();
    file_refused(
        "libfoo_bad_phoff.so",
        v2_patched(&[(elf::E_PHOFF, &far)]),
        PLAIN,
        &[ErrorCode::BadElf, ErrorCode::LoadFailed],
        &[],
    );
}

#[test]
fn corrupted_body() {
    // Keep a valid ELF header; scramble the program headers, the dynamic section and the rest.
    let scramble = v2_edited(|bytes| {
        let mut x: u32 = 0x1234_5678;
        for b in bytes[elf::EHDR_SIZE..].iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
    });
    file_refused(
        "libfoo_garbage.so",
        scramble,
        PLAIN,
        &[ErrorCode::BadElf, ErrorCode::LoadFailed],
        &[],
    );
}

#[test]
fn elf32_class() {
    file_refused(
        "libfoo_elf32.so",
        v2_patched(&[(elf::EI_CLASS, &[1])]),
        PLAIN,
        &[ErrorCode::BadElf],
        &[],
    );
}

#[test]
fn foreign_machine() {
    let machine = elf::EM_AARCH64.to_le_bytes();
    file_refused(
        "libfoo_aarch64.so",
        v2_patched(&[(elf::E_MACHINE, &machine)]),
        PLAIN,
        &[ErrorCode::BadElf],
        &[],
    );
}

#[test]
fn big_endian() {
    file_refused(
        "libfoo_be.so",
        v2_patched(&[(elf::EI_DATA, &[2])]),
        PLAIN,
        &[ErrorCode::BadElf],
        &[],
    );
}

#[test]
fn executable_pie() {
    basic_refuses(
        &Config::LAZY_PIE.path("basic"),
        &[ErrorCode::BadElf, ErrorCode::LoadFailed],
        &["basic"],
    );
}

#[test]
fn executable_nopie() {
    basic_refuses(
        &Config::LAZY_NOPIE.path("basic"),
        &[ErrorCode::BadElf, ErrorCode::LoadFailed],
        &["basic"],
    );
}

#[test]
fn missing_dependency() {
    basic_refuses(
        &CFG.path("libbad_needed.so"),
        &[ErrorCode::LoadFailed],
        &["libghost.so"],
    );
}

#[test]
fn undefined_symbol() {
    basic_refuses(
        &CFG.path("libbad_undef.so"),
        &[ErrorCode::LoadFailed],
        &["nobody_defines_this_function"],
    );
}

#[test]
fn function_replaced_by_data() {
    // foo_add in the same file is fine, but the reload is all or nothing.
    basic_refuses(
        &CFG.path("libbad_data.so"),
        &[ErrorCode::IncompatibleSymbol],
        &["foo_version"],
    );
}

#[test]
fn variable_size_changed() {
    let mut t = basic(CFG);
    t.expect("bump", 1);
    refused(
        &mut t,
        &CFG.path("libbad_size.so"),
        &[],
        &[ErrorCode::IncompatibleSymbol],
        &["foo_counter"],
    );
    t.expect("bump", 2);
    t.expect("counter", 2);
}

#[test]
fn no_symbol_in_common() {
    basic_refuses(
        &CFG.path("libnothing.so"),
        &[ErrorCode::NoCommonSymbols],
        &[],
    );
}

#[test]
fn replace_module_not_loaded() {
    let mut t = basic(CFG);
    refused(
        &mut t,
        &CFG.path("libfoo_v2.so"),
        &["--replace", "libnotloaded.so.3"],
        &[ErrorCode::ModuleNotFound],
        &["libnotloaded.so.3"],
    );
}

#[test]
fn default_module_not_loaded() {
    // libifunc.so is nowhere in `basic`.
    basic_refuses(
        &CFG.path("libifunc_v2.so"),
        &[ErrorCode::ModuleNotFound],
        &["libifunc"],
    );
}

#[test]
fn refusals_keep_the_current_generation() {
    let bad = [
        "libbad_data.so",
        "libbad_size.so",
        "libbad_undef.so",
        "libnothing.so",
    ];
    let mut t = refusals_keep_generation_1(&bad, |_, _| {});
    t.expect("bump", 21);
}

#[test]
fn dynamic_unknown_tag() {
    // DT_INIT_ARRAYSZ turned into a tag nobody defines: the init array loses its size, which
    // used to crash the loader inside the target.
    file_refused(
        "libfoo_dyn_tag.so",
        v2_edited(|b| elf::retag_dynamic(b, elf::DT_INIT_ARRAYSZ, 0x97_0000_001b)),
        ALSO_WITHOUT_PROBE,
        &[ErrorCode::BadElf],
        &["corrupted", "0x970000001b"],
    );
}

/// Found by the sweep (variant 654 of the default seed): PT_GNU_RELRO moved past the image. The
/// loader makes that range read-only after relocating — in the target, whatever mapping lies
/// there. The probe copy survives it (the same mapping is harmless there), so only the file
/// check can refuse it.
#[test]
fn relro_outside_the_image() {
    file_refused(
        "libfoo_relro.so",
        v2_edited(|b| elf::set_segment_vaddr(b, elf::PT_GNU_RELRO, 0xedc8)),
        ALSO_WITHOUT_PROBE,
        &[ErrorCode::BadElf],
        &["corrupted", "RELRO"],
    );
}

/// Found by the seed-22 sweep: the read-only data segment grown in memory over the segments
/// after it. glibc maps the extra as zero pages past the library's reserved span, over whatever
/// the target has there; the probe copy survived it, the target's next `dlopen` did not.
#[test]
fn overlapping_segments() {
    file_refused(
        "libfoo_overlap.so",
        v2_edited(|b| elf::set_load_memsz(b, 2, 0xe238)),
        ALSO_WITHOUT_PROBE,
        &[ErrorCode::BadElf],
        &["corrupted", "overlap"],
    );
}

/// Found by the seed-44 sweep: the GNU hash table's first hashed symbol moved out of range. Only
/// a lookup in the library walks it (the reload's `dlsym`), so loading alone did not fault.
#[test]
fn gnu_hash_out_of_range() {
    file_refused(
        "libfoo_hash.so",
        v2_edited(|b| elf::set_gnu_hash_symoffset(b, 0x00c1_0005)),
        ALSO_WITHOUT_PROBE,
        &[ErrorCode::BadElf],
        &["corrupted", "hash table"],
    );
}

#[test]
fn dynamic_pointer_without_size() {
    // The same loss of DT_INIT_ARRAYSZ, through a tag the loader knows (and ignores the value
    // of): every tag is valid, only the size is missing.
    let lose_size = v2_edited(|b| {
        elf::dynamic_entry(b, elf::DT_INIT_ARRAY);
        elf::retag_dynamic(b, elf::DT_INIT_ARRAYSZ, elf::DT_BIND_NOW)
    });
    file_refused(
        "libfoo_no_size.so",
        lose_size,
        ALSO_WITHOUT_PROBE,
        &[ErrorCode::BadElf],
        &["corrupted", "init array", "no size"],
    );
}

#[test]
fn dynamic_init_outside_code() {
    let init_at_0x10 = v2_edited(|b| {
        elf::dynamic_entry(b, elf::DT_INIT);
        assert!(
            !elf::in_code(b, 0x10),
            "the test needs 0x10 outside executable code (a -z separate-code link)"
        );
        // 0x10 is inside the ELF header (e_type), mapped read-only.
        elf::set_dynamic_value(b, elf::DT_INIT, 0x10)
    });
    file_refused(
        "libfoo_init_0x10.so",
        init_at_0x10,
        PLAIN,
        &[ErrorCode::BadElf],
        &["corrupted", "initialiser", "0x10"],
    );
}

#[test]
fn relocation_outside_the_image() {
    let far_reloc = v2_edited(|b| {
        let rela = elf::dynamic_entry(b, elf::DT_RELA).val;
        let size = elf::dynamic_entry(b, elf::DT_RELASZ).val;
        assert!(
            size as usize >= elf::RELA_SIZE,
            "no relocation in .rela.dyn"
        );
        let at = elf::vaddr_to_offset(b, rela).expect("DT_RELA maps to the file");
        // The first entry's r_offset: where the loader writes.
        elf::write_u64(b, at, 0x7fff_0000_0000);
    });
    file_refused(
        "libfoo_far_reloc.so",
        far_reloc,
        PLAIN,
        &[ErrorCode::BadElf],
        &["corrupted", "relocation", "0x7fff00000000"],
    );
}

#[test]
fn relative_relocation_count_lies() {
    // DT_RELACOUNT says the first relocations are R_X86_64_RELATIVE; make the first one
    // R_X86_64_64 instead (symbol 0, in the image: every check of the file passes). The loader
    // asserts on it ("Inconsistency detected by ld.so") and exits: in the probe's copy, silently.
    let absolute_first = v2_edited(|b| {
        let count = elf::dynamic_entry(b, elf::DT_RELACOUNT).val;
        assert!(count >= 1, "no RELATIVE relocation counted");
        let rela = elf::dynamic_entry(b, elf::DT_RELA).val;
        let at = elf::vaddr_to_offset(b, rela).expect("DT_RELA maps to the file");
        assert_eq!(elf::read_u64(b, at + 8), elf::R_X86_64_RELATIVE, "r_info");
        elf::write_u64(b, at + 8, elf::R_X86_64_64);
    });
    file_refused(
        "libfoo_relacount.so",
        absolute_first,
        PLAIN,
        &[ErrorCode::BadElf],
        &["crashed a throwaway copy"],
    );
}

/// xorshift64: a fixed seed gives the same corruptions on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

/// One corrupted variant of `good`: the name of the corruption and the bytes.
fn corrupt(good: &[u8], rng: &mut XorShift) -> (&'static str, Vec<u8>) {
    let mut b = good.to_vec();
    match rng.next() % 4 {
        0 => {
            for _ in 0..rng.range(1, 20) {
                let at = rng.range(0, b.len() - 1);
                b[at] ^= rng.range(1, 255) as u8;
            }
            ("flip bytes", b)
        }
        1 => {
            let len = rng.range(1, 512);
            let at = rng.range(0, b.len() - len);
            b[at..at + len].fill(0);
            ("zero a run", b)
        }
        2 => {
            b.truncate(rng.range(64, good.len() - 1));
            ("truncate", b)
        }
        _ => {
            for _ in 0..rng.range(1, 8) {
                let at = rng.range(0, elf::EHDR_SIZE - 1);
                b[at] = rng.next() as u8;
            }
            ("scramble the header", b)
        }
    }
}

/// What a refusal was about, from its message.
fn refusal_kind(msg: &str) -> &'static str {
    if msg.contains("crashed a throwaway copy") {
        "refused: crashed the probe"
    } else if msg.contains("did not finish within") {
        "refused: the probe timed out"
    } else if msg.contains("cannot load") {
        "refused: the loader said no"
    } else if msg.contains("not an ELF file") {
        "refused: not ELF"
    } else if msg.contains("corrupted") || msg.contains("truncated") {
        "refused: corrupted or truncated"
    } else {
        "refused: other"
    }
}

/// How many corrupted variants [`corruption_sweep`] tries: `HOTAGENT_SWEEP_VARIANTS`, default 150.
fn sweep_variants() -> usize {
    env_parse("HOTAGENT_SWEEP_VARIANTS").unwrap_or(150)
}

/// The target can still take a good patch and give it back: a reload of libfoo v2 works.
#[track_caller]
fn still_reloadable(t: &mut Target, after: &str) {
    let out = hotctl(
        t,
        &["reload", path_str(&CFG.path("libfoo_v2.so")), "--json"],
    );
    assert!(
        out.success(),
        "{after}, a good libfoo v2 no longer reloads:\n{out}"
    );
    t.expect("version", 2);
    t.expect("add 2 3", 105);
    rollback(t);
    t.expect("version", 1);
}

/// A seeded sweep of corrupted copies of libfoo v2 against one target: whatever each does, the
/// target survives, can still take a good patch, and once every accepted one is rolled back it
/// runs v1 at generation 0, its own `dlopen` still works, and it exits cleanly.
#[test]
fn corruption_sweep() {
    let variants = sweep_variants();
    let mut t = basic(CFG);
    let good = std::fs::read(CFG.path("libfoo_v2.so")).unwrap();
    let dir = scratch();
    // Always the same name (a corrupted soname still names the module by file name), a new inode
    // every time.
    let path = dir.path().join("libfoo.so");
    // HOTAGENT_SWEEP_SEED picks another sequence (0 is not a valid xorshift state).
    let seed = env_parse("HOTAGENT_SWEEP_SEED")
        .filter(|&s: &u64| s != 0)
        .unwrap_or(0x2545_f491_4f6c_dd1d);
    let mut rng = XorShift(seed);
    let mut tally: std::collections::BTreeMap<(&str, &str), usize> = Default::default();
    let mut examples: std::collections::BTreeMap<&str, String> = Default::default();
    let start = std::time::Instant::now();
    for i in 0..variants {
        let (mode, bytes) = corrupt(&good, &mut rng);
        write_atomic(&path, &bytes);
        // HOTAGENT_SWEEP_KEEP=FILE keeps a copy of the variant being tried, to study a failure.
        if let Some(keep) = std::env::var_os("HOTAGENT_SWEEP_KEEP") {
            std::fs::write(keep, &bytes).unwrap();
        }
        let out = hotctl(&t, &["reload", path_str(&path)]);
        let outcome = if out.success() {
            assert!(
                t.is_alive(),
                "variant {i} ({mode}) reloaded, then the target died"
            );
            assert_eq!(status(&t).generation, 1, "variant {i} ({mode})");
            rollback(&t);
            "reloaded, rolled back"
        } else {
            let msg = check_failure(&out);
            assert_eq!(
                out.status.code(),
                Some(1),
                "variant {i} ({mode}): the agent should have answered a refusal:\n{out}"
            );
            assert!(
                !msg.contains("internal fault"),
                "variant {i} ({mode}): {msg}"
            );
            let kind = refusal_kind(&msg);
            examples.entry(kind).or_insert(msg);
            kind
        };
        if !t.is_alive() {
            panic!("variant {i} ({mode}, {outcome}) killed the target\n{out}");
        }
        t.expect("version", 1);
        // Shown only when the test fails: which variant did what.
        eprintln!("variant {i}: {mode}: {outcome}");
        *tally.entry((mode, outcome)).or_default() += 1;
        // An accepted variant can leave the process's loader state poisoned without crashing
        // anything yet (see soname_outside_the_string_table): check now and then.
        if (i + 1) % 25 == 0 {
            still_reloadable(&mut t, &format!("after variants {}..={i}", i + 1 - 25));
        }
    }
    eprintln!(
        "corruption sweep: {variants} variants in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    for ((mode, outcome), n) in &tally {
        eprintln!("  {n:4}  {mode:20} {outcome}");
    }
    for (kind, msg) in &examples {
        eprintln!("  e.g. {kind}: {msg}");
    }
    assert_eq!(tally.values().sum::<usize>(), variants);
    still_reloadable(&mut t, "at the end");
    // v1, generation 0, and nothing on the target's stderr: not even a loader's last words in a
    // probe child.
    assert_unchanged(&mut t);
    // The target's own dlopen walks every loaded library, the accepted variants included.
    let plugin = CFG.path("libplugin.so");
    t.expect(&format!("dlopen {}", plugin.display()), "ok");
    t.expect("plugin", 1);
    // Exiting runs the destructors of every library loaded on the way, rolled back or not.
    let done = t.finish();
    assert!(done.status.success(), "the target's exit: {done:?}");
}

/// DT_SONAME is an offset into the dynamic string table; this one points 1.7 GB past it. The
/// loader reads a library's soname only when a later `dlopen` compares names, so the probe's load
/// succeeds, and once loaded for real (never unloaded, even after a rollback) the library poisons
/// the process: every later `dlopen` that looks for a library by name reads the wild pointer, so
/// every later probe crashes and the target's own next `dlopen` of a new library kills it.
#[test]
fn soname_outside_the_string_table() {
    let soname_far_out = v2_edited(|b| {
        let soname = elf::dynamic_entry(b, elf::DT_SONAME);
        let strsz = elf::dynamic_entry(b, elf::DT_STRSZ).val;
        assert!(soname.val < strsz);
        elf::set_dynamic_value(b, elf::DT_SONAME, soname.val + 0x6600_0000);
    });
    // Named libfoo.so: goblin reads no soname at such an offset, and the file name still selects
    // the module.
    let mut t = file_refused(
        "libfoo.so",
        soname_far_out,
        PLAIN,
        &[ErrorCode::BadElf],
        &["corrupted"],
    );
    still_reloadable(&mut t, "after the refusal");
    let plugin = CFG.path("libplugin.so");
    t.expect(&format!("dlopen {}", plugin.display()), "ok");
    t.expect("plugin", 1);
}
