//! Value parsers shared by several commands.

use mer_shared::input::InputLayout;
use mer_shared::labels::Taxonomy;

/// `--input`: the layout names, listed in `--help`.
pub fn input_layout() -> impl clap::builder::TypedValueParser<Value = InputLayout> {
    use clap::builder::TypedValueParser;
    let names = InputLayout::NAMES.map(|(name, _)| name);
    clap::builder::PossibleValuesParser::new(names).map(|name| name.parse::<InputLayout>().expect("one of the names"))
}

/// A class set (`--classes`): the names, listed in `--help`.
pub fn taxonomy() -> impl clap::builder::TypedValueParser<Value = Taxonomy> {
    use clap::builder::TypedValueParser;
    let names = Taxonomy::ALL.map(Taxonomy::name);
    clap::builder::PossibleValuesParser::new(names).map(|name| name.parse::<Taxonomy>().expect("one of the names"))
}

/// A count argument from 1 to `max`: 0 is refused rather than read as "all" or "none".
pub fn count(max: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..=max)
}
