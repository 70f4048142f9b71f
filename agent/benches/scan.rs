//! Criterion micro-benchmarks of the work a reload does under the loader's lock: reading every
//! module's relocations and planning the slot writes, over synthetic images (no loader, no
//! process), with 10, 50 and 200 modules of 40 imports each. `make bench` runs them.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hotagent::image::synthetic::Synthetic;
use hotagent::image::{Image, Layout, Memory, R_GLOB_DAT, R_JUMP_SLOT};
use hotagent::reload::{plan_slots, Binding};
use std::hint::black_box;
use std::time::Duration;

const OLD: u64 = 0x7000_0000_1000;
const NEW: u64 = 0x7100_0000_2000;
const IMPORTS: usize = 40;

/// Several synthetic modules, each at its own base, read as one address space.
struct World {
    bufs: Vec<(u64, Vec<u8>)>,
    layouts: Vec<Layout>,
}

/// Found by binary search over bases in order, as the live memory finds its segments.
impl Memory for World {
    fn tail(&self, addr: u64) -> Option<&[u8]> {
        let i = self.bufs.partition_point(|(base, _)| *base <= addr);
        let (base, bytes) = self.bufs.get(i.checked_sub(1)?)?;
        let off = usize::try_from(addr - base).ok()?;
        bytes.get(off..).filter(|t| !t.is_empty())
    }
}

/// `modules` images; in each, 40 imports of which the first 8 name replaced functions and hold
/// their old address, the rest name other functions.
fn world(modules: usize) -> World {
    let names: Vec<String> = (0..IMPORTS).map(|i| format!("function_{i}")).collect();
    let mut w = World {
        bufs: Vec::new(),
        layouts: Vec::new(),
    };
    for m in 0..modules {
        let imports: Vec<(&str, u32, u64)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let kind = if i % 2 == 0 { R_JUMP_SLOT } else { R_GLOB_DAT };
                (n.as_str(), kind, OLD + i as u64 * 16)
            })
            .collect();
        let s = Synthetic::new(0x10_0000 + m as u64 * 0x10_0000, &imports);
        w.layouts.push(s.layout.clone());
        w.bufs.push((s.base, s.bytes));
    }
    w
}

fn bindings() -> Vec<Binding> {
    (0..8)
        .map(|i| Binding {
            name: format!("function_{i}"),
            known: vec![OLD + i as u64 * 16],
            target: NEW + i as u64 * 16,
            only_in: None,
        })
        .collect()
}

fn scan(c: &mut Criterion) {
    let mut g = c.benchmark_group("scan");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(30);
    let b = bindings();
    for modules in [10, 50, 200] {
        let w = world(modules);
        g.bench_with_input(
            BenchmarkId::new("read relocations", modules),
            &w,
            |bench, w| {
                bench.iter(|| {
                    let mut n = 0;
                    for l in &w.layouts {
                        if let Ok(image) = Image::new(w, l) {
                            n += image.relocations().count();
                        }
                    }
                    black_box(n)
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("plan 8 symbols", modules),
            &w,
            |bench, w| bench.iter(|| black_box(plan_slots(w, &w.layouts, &b, &[]).writes.len())),
        );
    }
    g.finish();
}

criterion_group!(benches, scan);
criterion_main!(benches);
