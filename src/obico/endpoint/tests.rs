use super::*;

#[test]
fn routes_match_the_axum_router_they_replace() {
    assert_eq!(Route::of("POST", UNLINKED_PATH), Route::Unlinked);
    assert_eq!(Route::of("HEAD", UNLINKED_PATH), Route::NotAllowed("POST"));
    assert_eq!(Route::of("HEAD", VERIFY_PATH), Route::Verify);
    assert_eq!(Route::of("POST", LEGACY_VERIFY_PATH), Route::Verify);
    assert_eq!(
        Route::of("OPTIONS", VERIFY_PATH),
        Route::NotAllowed("POST,GET,HEAD")
    );
    assert_eq!(Route::of("HEAD", PRINTER_PATH), Route::Printer);
    assert_eq!(
        Route::of("get", DISCOVERY_PATH),
        Route::NotAllowed("GET,HEAD,POST")
    );
    assert_eq!(Route::of("POST", DISCOVERY_PATH), Route::Link);
    assert_eq!(Route::of("POST", PASSCODES_PATH), Route::Claim);
    for path in [
        "/api/v1/octo/unlinked",
        "/api/v1/octo/unlinked//",
        "/api/v1/",
        "/api/v1/nope",
        "/",
        "",
        "*",
    ] {
        assert_eq!(Route::of("POST", path), Route::NotFound, "{path:?}");
    }
}

#[test]
fn the_code_is_read_as_a_form_field() {
    let code = |query| code_param(query).map(|c| c.map(|c| c.as_str().to_owned()));
    assert_eq!(code(None), Ok(None));
    assert_eq!(code(Some("")), Ok(None));
    assert_eq!(code(Some("x=1&&code=a+b%21")), Ok(Some("a b!".into())));
    assert_eq!(code(Some("code")), Ok(Some(String::new())));
    assert_eq!(code(Some("co%64e=1")), Ok(Some("1".into())));
    assert_eq!(code(Some("code=1&code=1")), Err(()));
    assert_eq!(code(Some("%zz=1&code=%ff")), Ok(Some("\u{fffd}".into())));
}
