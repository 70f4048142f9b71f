//! Property tests: every request and response survives the wire. Encoded, it is exactly one
//! line, and that line decodes back to an equal value; with strings holding newlines, quotes,
//! control characters and any Unicode, and numbers up to their types' limits.

use hotagent_protocol::*;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

/// Strings that stress the framing: line breaks (JSON must escape them, or the line splits),
/// quotes, backslashes, NUL and other control characters, separators JSON leaves raw
/// (U+2028), and any other Unicode scalar value.
fn text() -> impl Strategy<Value = String> {
    let special = prop_oneof![
        Just('\n'),
        Just('\r'),
        Just('"'),
        Just('\\'),
        Just('\0'),
        Just('\u{7f}'),
        Just('\u{2028}'),
        Just('\u{feff}'),
        Just('{'),
        Just('}'),
    ];
    vec(prop_oneof![3 => any::<char>(), 1 => special], 0..24).prop_map(String::from_iter)
}

fn names() -> impl Strategy<Value = Vec<String>> {
    vec(text(), 0..4)
}

fn reload_request() -> impl Strategy<Value = ReloadRequest> {
    (
        text(),
        option::of(text()),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        option::of(any::<u64>()),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                path,
                replace,
                dry_run,
                no_probe,
                got_only,
                deadline_ms,
                confirm,
                fresh_state,
                changed_only,
            )| {
                ReloadRequest {
                    path,
                    replace,
                    dry_run,
                    no_probe,
                    got_only,
                    fresh_state,
                    changed_only,
                    checkpoint: false,
                    deadline_ms,
                    confirm,
                    settle_ms: None,
                    hook_timeout_ms: None,
                    probation_ms: None,
                    persist: false,
                    on_next_start: false,
                    force: false,
                }
            },
        )
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        reload_request().prop_map(Request::Reload),
        (option::of(any::<u64>()), any::<bool>()).prop_map(|(deadline_ms, confirm)| {
            Request::Rollback(RollbackRequest {
                deadline_ms,
                confirm,
                settle_ms: None,
                hook_timeout_ms: None,
                reset: false,
            })
        }),
        Just(Request::status()),
        Just(Request::commit()),
    ]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        Just(ErrorCode::BadRequest),
        Just(ErrorCode::FileUnreadable),
        Just(ErrorCode::BadElf),
        Just(ErrorCode::LoadFailed),
        Just(ErrorCode::ModuleNotFound),
        Just(ErrorCode::NoCommonSymbols),
        Just(ErrorCode::IncompatibleSymbol),
        Just(ErrorCode::NothingToRollBack),
        Just(ErrorCode::WriteFailed),
        Just(ErrorCode::Abandoned),
        Just(ErrorCode::Busy),
        Just(ErrorCode::Internal),
    ]
}

fn entry() -> impl Strategy<Value = EntryReport> {
    let state = prop_oneof![
        Just(EntryState::Current),
        Just(EntryState::Jump),
        Just(EntryState::Original),
    ];
    (text(), any::<u64>(), state, option::of(text())).prop_map(|(module, addr, state, reason)| {
        EntryReport {
            module,
            addr,
            state,
            reason,
        }
    })
}

fn symbol() -> impl Strategy<Value = SymbolReport> {
    (
        text(),
        option::of(text()),
        text(),
        any::<usize>(),
        names(),
        any::<usize>(),
        any::<usize>(),
        vec(entry(), 0..3),
    )
        .prop_map(
            |(name, version, kind, slots, modules, lazy, other, entries)| SymbolReport {
                name,
                version,
                kind,
                slots,
                modules,
                lazy,
                other,
                entries,
            },
        )
}

fn symbols() -> impl Strategy<Value = Vec<SymbolReport>> {
    vec(symbol(), 0..3)
}

fn phases() -> impl Strategy<Value = Phases> {
    any::<[u64; 11]>().prop_map(|p| Phases {
        stage_us: p[0],
        check_us: p[1],
        probe_us: p[2],
        load_us: p[3],
        plan_us: p[4],
        write_us: p[5],
        verify_us: p[6],
        entries_us: p[7],
        prepare_us: p[8],
        migrate_us: p[9],
        committed_us: p[10],
    })
}

fn pause() -> impl Strategy<Value = PauseReport> {
    (
        (any::<u32>(), any::<u64>(), any::<usize>(), any::<usize>()),
        (
            any::<usize>(),
            proptest::option::of(any::<i32>()),
            any::<bool>(),
        ),
        (any::<u64>(), any::<u64>()),
    )
        .prop_map(
            |(
                (rounds, longest_us, threads, entries),
                (asleep, woke, per_thread),
                (held_us, trap_us),
            )| PauseReport {
                rounds,
                longest_us,
                threads,
                entries,
                asleep,
                woke,
                per_thread,
                held_us,
                trap_us,
            },
        )
}

fn reload_report() -> impl Strategy<Value = ReloadReport> {
    (
        (any::<u32>(), any::<bool>(), text(), text()),
        (any::<usize>(), any::<usize>(), symbols(), any::<u64>()),
        (phases(), pause(), names()),
    )
        .prop_map(
            |(
                (generation, dry_run, path, module),
                (slots, symtab_entries, symbols, elapsed_us),
                (phases, pause, warnings),
            )| ReloadReport {
                generation,
                dry_run,
                path,
                module,
                slots,
                symtab_entries,
                symbols,
                elapsed_us,
                phases,
                pause,
                warnings,
                probation_ms: 0,
                persisted: None,
                deferred: false,
                unchanged: false,
            },
        )
}

fn rollback_report() -> impl Strategy<Value = RollbackReport> {
    (
        (any::<u32>(), any::<u32>(), any::<usize>(), any::<usize>()),
        (symbols(), any::<u64>(), pause(), names()),
    )
        .prop_map(
            |(
                (generation, from, slots, symtab_entries),
                (symbols, elapsed_us, pause, warnings),
            )| {
                RollbackReport {
                    generation,
                    from,
                    slots,
                    symtab_entries,
                    symbols,
                    elapsed_us,
                    pause,
                    warnings,
                    unmigrate_us: elapsed_us / 2,
                }
            },
        )
}

fn generation() -> impl Strategy<Value = GenerationInfo> {
    (
        any::<u32>(),
        text(),
        text(),
        text(),
        names(),
        any::<usize>(),
        any::<u64>(),
    )
        .prop_map(
            |(generation, path, staged, module, symbols, slots, elapsed_us)| GenerationInfo {
                generation,
                path,
                staged,
                module,
                symbols,
                slots,
                elapsed_us,
                probation: None,
                applied_at_startup: false,
                since_unix_ms: None,
            },
        )
}

fn status_report() -> impl Strategy<Value = StatusReport> {
    (
        (any::<u32>(), text(), any::<u32>(), text()),
        (
            any::<u32>(),
            vec(generation(), 0..3),
            any::<usize>(),
            symbols(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (protocol, agent_version, pid, exe),
                (generation, generations, modules, symbols, busy),
            )| {
                StatusReport {
                    protocol,
                    agent_version,
                    pid,
                    exe,
                    generation,
                    generations,
                    modules,
                    busy,
                    symbols,
                    refused_loads: Vec::new(),
                    reverted: Vec::new(),
                }
            },
        )
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        Just(Response::Ready),
        (1..65i32).prop_map(|signal| Response::Died(DiedReport { signal })),
        reload_report().prop_map(Response::Reload),
        rollback_report().prop_map(Response::Rollback),
        status_report().prop_map(Response::Status),
        (error_code(), text())
            .prop_map(|(code, message)| Response::Error(ErrorReply { code, message })),
    ]
}

/// Exactly one newline, and it is the last byte.
fn is_one_line(line: &[u8]) -> bool {
    line.iter().position(|&b| b == b'\n') == Some(line.len() - 1)
}

proptest! {
    #[test]
    fn requests_round_trip(req in request()) {
        let line = encode_line(&req);
        prop_assert!(is_one_line(&line));
        prop_assert!(line.len() <= MAX_LINE_BYTES);
        prop_assert_eq!(decode_request(&line), Ok(req.clone()));
        // Without the newline, and with a CRLF or surrounding blanks, as a client may send it.
        let body = &line[..line.len() - 1];
        prop_assert_eq!(decode_request(body), Ok(req.clone()));
        let crlf = [b"  ", body, b"\r\n"].concat();
        prop_assert_eq!(decode_request(&crlf), Ok(req));
    }

    /// A request cut short (a client that stalls or dies mid-line) never decodes, so the agent
    /// cannot act on half of one.
    #[test]
    fn truncated_requests_never_decode(req in request()) {
        let line = encode_line(&req);
        for end in 0..line.len() - 1 {
            prop_assert!(decode_request(&line[..end]).is_err(), "prefix of {} bytes", end);
        }
    }

    #[test]
    fn responses_round_trip(resp in response()) {
        let line = encode_line(&resp);
        prop_assert!(is_one_line(&line));
        // hotctl reads up to the newline and decodes what it read, newline included.
        let back: Response = serde_json::from_slice(&line).unwrap();
        prop_assert_eq!(back, resp);
    }
}
