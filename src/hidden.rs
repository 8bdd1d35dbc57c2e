//! Characters a device-info string may not hold, because a name holding them can render as
//! another name: controls, line and paragraph separators, and every `Default_Ignorable_Code_Point`
//! (which covers the bidi controls and the zero-width characters).
//! Data and a lookup: it must not rewrite what the strict wire can refuse; only the Obico profile's
//! strings, which no one can refuse, are stripped of such characters.

/// Unicode's `Default_Ignorable_Code_Point` property (DerivedCoreProperties.txt; unchanged from
/// Unicode 14 to 16), as inclusive ranges in code-point order. Such characters are invisible
/// unless a font chooses to show them; the bidi embeddings, overrides, isolates and marks are
/// among them (U+061C, U+200E–U+200F, U+202A–U+202E, U+2066–U+2069).
pub(crate) const DEFAULT_IGNORABLE: [(u32, u32); 27] = [
    (0x00AD, 0x00AD),   // SOFT HYPHEN
    (0x034F, 0x034F),   // COMBINING GRAPHEME JOINER
    (0x061C, 0x061C),   // ARABIC LETTER MARK
    (0x115F, 0x1160),   // HANGUL CHOSEONG FILLER..HANGUL JUNGSEONG FILLER
    (0x17B4, 0x17B5),   // KHMER VOWEL INHERENT AQ..AA
    (0x180B, 0x180D),   // MONGOLIAN FREE VARIATION SELECTOR ONE..THREE
    (0x180E, 0x180E),   // MONGOLIAN VOWEL SEPARATOR
    (0x180F, 0x180F),   // MONGOLIAN FREE VARIATION SELECTOR FOUR
    (0x200B, 0x200F),   // ZERO WIDTH SPACE..RIGHT-TO-LEFT MARK (ZWNJ, ZWJ, LRM, RLM)
    (0x202A, 0x202E),   // LEFT-TO-RIGHT EMBEDDING..RIGHT-TO-LEFT OVERRIDE
    (0x2060, 0x2064),   // WORD JOINER..INVISIBLE PLUS
    (0x2065, 0x2065),   // <reserved>
    (0x2066, 0x206F),   // LEFT-TO-RIGHT ISOLATE..NOMINAL DIGIT SHAPES
    (0x3164, 0x3164),   // HANGUL FILLER
    (0xFE00, 0xFE0F),   // VARIATION SELECTOR-1..16
    (0xFEFF, 0xFEFF),   // ZERO WIDTH NO-BREAK SPACE (BOM)
    (0xFFA0, 0xFFA0),   // HALFWIDTH HANGUL FILLER
    (0xFFF0, 0xFFF8),   // <reserved>
    (0x1BCA0, 0x1BCA3), // SHORTHAND FORMAT LETTER OVERLAP..UP STEP
    (0x1D173, 0x1D17A), // MUSICAL SYMBOL BEGIN BEAM..END PHRASE
    (0xE0000, 0xE0000), // <reserved>
    (0xE0001, 0xE0001), // LANGUAGE TAG
    (0xE0002, 0xE001F), // <reserved>
    (0xE0020, 0xE007F), // TAG SPACE..CANCEL TAG
    (0xE0080, 0xE00FF), // <reserved>
    (0xE0100, 0xE01EF), // VARIATION SELECTOR-17..256
    (0xE01F0, 0xE0FFF), // <reserved>
];

/// Whether `c` has Unicode's `Default_Ignorable_Code_Point` property.
pub(crate) fn is_default_ignorable(c: char) -> bool {
    let c = u32::from(c);
    // The table is sorted and disjoint: the last range starting at or before `c` decides.
    let after = DEFAULT_IGNORABLE.partition_point(|&(start, _)| start <= c);
    after
        .checked_sub(1)
        .and_then(|i| DEFAULT_IGNORABLE.get(i))
        .is_some_and(|&(_, end)| c <= end)
}

/// Whether a device-info string may not hold `c`: a control character (`Cc`), a line or
/// paragraph separator (U+2028, U+2029), or a `Default_Ignorable_Code_Point` (bidi controls,
/// zero-width characters including the zero-width joiner, variation selectors, fillers, tags).
///
/// ```
/// use lanlink::wire::is_hidden;
/// assert!(is_hidden('\u{202E}')); // RIGHT-TO-LEFT OVERRIDE
/// assert!(is_hidden('\u{200B}')); // ZERO WIDTH SPACE
/// assert!(is_hidden('\u{7}'));
/// assert!(!is_hidden('é') && !is_hidden('中') && !is_hidden('🖨'));
/// ```
pub fn is_hidden(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') || is_default_ignorable(c)
}

/// `raw` with every character [`is_hidden`] refuses dropped, truncated to at most `max` bytes on
/// a character boundary: for wires that cannot be made to refuse (the Obico profile's unmodified
/// agents and servers), so that what they send still shows, and shows as what it reads.
#[cfg(feature = "obico-wire")]
pub(crate) fn sanitized(raw: &str, max: usize) -> String {
    let mut out = String::new();
    for c in raw.chars().filter(|c| !is_hidden(*c)) {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_disjoint() {
        for (start, end) in DEFAULT_IGNORABLE {
            assert!(start <= end);
        }
        for pair in DEFAULT_IGNORABLE.windows(2) {
            assert!(pair[0].1 < pair[1].0, "{pair:x?}");
        }
    }

    /// Every code point against a linear scan of the table, and the edges of each range.
    #[test]
    fn lookup_matches_the_table() {
        let linear = |c: char| {
            DEFAULT_IGNORABLE
                .iter()
                .any(|&(s, e)| (s..=e).contains(&u32::from(c)))
        };
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            assert_eq!(is_default_ignorable(c), linear(c), "U+{:04X}", u32::from(c));
        }
        let count: u32 = DEFAULT_IGNORABLE.iter().map(|(s, e)| e - s + 1).sum();
        // DerivedCoreProperties.txt: "Total code points: 4174".
        assert_eq!(count, 4174);
        for c in [
            '\u{AC}',
            '\u{AE}',
            '\u{200A}',
            '\u{2010}',
            '\u{E1000}',
            '\u{FE10}',
        ] {
            assert!(!is_default_ignorable(c), "U+{:04X}", u32::from(c));
        }
    }
}
