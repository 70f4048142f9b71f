//! The staged patch, parsed once per reload.
//!
//! Every check of a reload reads the same bytes: the ELF checks, the private-state analysis,
//! the `$ORIGIN` dependencies. Each used to map the sealed copy and parse it again (goblin
//! through elfdiff for the analysis), a fifth of the check phase; now the check maps it once,
//! parses it once, and hands this to each of them.

use goblin::elf::Elf;
use hotagent_elfdiff::file::FileView;

/// The patch's bytes and their parse.
pub struct Parsed<'a> {
    pub bytes: &'a [u8],
    form: Form<'a>,
}

enum Form<'a> {
    /// Section headers and all: what the private-state analysis reads.
    View(FileView<'a>),
    /// No section headers: enough for the checks, not for the analysis, which says why.
    Bare(Elf<'a>),
}

impl<'a> Parsed<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Parsed<'a>, goblin::error::Error> {
        let elf = Elf::parse(bytes)?;
        let form = if elf.section_headers.is_empty() {
            Form::Bare(elf)
        } else {
            Form::View(FileView::from_elf(bytes, elf))
        };
        Ok(Parsed { bytes, form })
    }

    pub fn elf(&self) -> &Elf<'a> {
        match &self.form {
            Form::View(v) => &v.elf,
            Form::Bare(elf) => elf,
        }
    }

    /// The view the private-state analysis reads, or why there is none (the words
    /// `FileView::parse` uses).
    pub fn view(&self) -> Result<&FileView<'a>, &'static str> {
        match &self.form {
            Form::View(v) => Ok(v),
            Form::Bare(_) => Err("it has no section headers"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The view handed over is the one `FileView::parse` gives for the same bytes.
    #[test]
    fn one_parse_gives_the_view_a_second_would() {
        let bytes = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        let parsed = Parsed::parse(&bytes).unwrap();
        let again = FileView::parse(&bytes).unwrap();
        let view = parsed.view().unwrap();
        assert_eq!(view.private, again.private);
        assert_eq!(view.rels.len(), again.rels.len());
        assert_eq!(view.build_id(), again.build_id());
        assert_eq!(parsed.elf().soname, Some("libc.so.6"));
    }
}
