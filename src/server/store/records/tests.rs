use super::*;
use crate::server::store::MemoryBytes;

fn records() -> Records<MemoryBytes> {
    Records::new(
        MemoryBytes::default(),
        RecordsConfig::new(StoreKey::from_bytes([7; 32])),
    )
}

fn at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("time")
}

fn version(value: &[u8]) -> [u8; NONCE_LEN] {
    value[..NONCE_LEN].try_into().expect("nonce")
}

#[test]
fn the_version_cache_stays_bounded_and_forgets() {
    let mut cache = VersionCache {
        capacity: 3,
        ..VersionCache::default()
    };
    let key = |i: usize| Key::new("ctr", &format!("{i:x}")).expect("key");
    for i in 0..100 {
        cache.put(&key(i), vec![Some(vec![i as u8])]);
    }
    assert_eq!(cache.entries.len(), 3);
    assert!(cache.order.len() <= 6);
    assert!(cache.get(&key(99)).is_some() && cache.get(&key(0)).is_none());
    cache.forget(&key(99));
    assert!(cache.get(&key(99)).is_none());
    let mut none = VersionCache::default();
    none.put(&key(1), vec![None]);
    assert!(none.get(&key(1)).is_none(), "capacity 0 remembers nothing");
}

#[test]
fn a_lineage_names_the_newest_versions_first_and_stays_bounded() {
    let mut lineage = Lineage::new();
    let mut versions = Vec::new();
    for i in 0..20u8 {
        let version = [i; NONCE_LEN];
        lineage = descend(&version, &lineage);
        versions.push(version);
        assert!(lineage.len() <= LINEAGE_LEN);
        assert_eq!(lineage[0], [i; TAG_LEN]);
    }
    assert_eq!(lineage.len(), LINEAGE_LEN);
    assert_eq!(lineage[LINEAGE_LEN - 1], [12; TAG_LEN]);
}

/// What a read-back concludes of a write over a version, as later writers build on it.
#[test]
fn a_read_back_tells_a_write_that_applied_from_one_that_did_not() {
    let records = records();
    let key = Key::new("ctr", "ab").expect("key");
    let now = at();
    let first = records.seal(&key, &[], now, b"{}").expect("seal");
    let base = version(&first);
    // Mine replaced `base`; then another writer built on mine.
    let mine = records
        .seal(&key, &descend(&base, &[]), now, b"{}")
        .expect("seal");
    let mine_v = version(&mine);
    let next = records
        .seal(&key, &descend(&mine_v, &descend(&base, &[])), now, b"{}")
        .expect("seal");
    let classify =
        |current: Option<&[u8]>| records.classify(&key, Some(&base), Some(&mine_v), current);
    assert_eq!(
        classify(Some(&mine)),
        Outcome::Applied,
        "the key holds mine"
    );
    assert_eq!(
        classify(Some(&next)),
        Outcome::Applied,
        "a descendant of mine"
    );
    assert_eq!(
        classify(Some(&first)),
        Outcome::NotApplied,
        "still the version read"
    );
    // Another writer replaced `base` instead of me.
    let theirs = records
        .seal(&key, &descend(&base, &[]), now, b"{}")
        .expect("seal");
    assert_eq!(classify(Some(&theirs)), Outcome::NotApplied);
    assert_eq!(
        classify(None),
        Outcome::NotApplied,
        "gone: a write did not apply"
    );
    assert_eq!(
        records.classify(&key, Some(&base), None, None),
        Outcome::Applied,
        "gone: a delete did"
    );
    // Past the lineage's reach nothing can be told.
    let mut lineage = descend(&base, &[]);
    for i in 0..LINEAGE_LEN as u8 {
        lineage = descend(&[i; NONCE_LEN], &lineage);
    }
    let far = records.seal(&key, &lineage, now, b"{}").expect("seal");
    assert_eq!(classify(Some(&far)), Outcome::Unknown);
    // A value that does not open tells nothing either.
    assert_eq!(classify(Some(&[9; 64])), Outcome::Unknown);
}

#[test]
fn a_value_opens_only_under_its_own_key_name_and_store_key() {
    let records = records();
    let key = Key::new("code", "01").expect("key");
    let value = records.seal(&key, &[], at(), b"{\"a\":1}").expect("seal");
    let opened = records
        .open(&key, &value, at() - TimeDelta::seconds(1))
        .expect("open");
    assert!(opened.live && opened.json.as_slice() == b"{\"a\":1}");
    assert!(
        !records.open(&key, &value, at()).expect("open").live,
        "expired at its time"
    );
    let other = Key::new("code", "02").expect("key");
    assert_eq!(
        records.open(&other, &value, at()).err(),
        Some(StoreError::Corrupt)
    );
    let stranger = Records::new(
        MemoryBytes::default(),
        RecordsConfig::new(StoreKey::from_bytes([8; 32])),
    );
    assert_eq!(
        stranger.open(&key, &value, at()).err(),
        Some(StoreError::Corrupt)
    );
    let mut tampered = value.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert_eq!(
        records.open(&key, &tampered, at()).err(),
        Some(StoreError::Corrupt)
    );
    assert_eq!(
        records.open(&key, &value[..10], at()).err(),
        Some(StoreError::Corrupt)
    );
}
