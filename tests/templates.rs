use shopper_bridge::templates::Templates;

#[test]
fn smoke() {
    let t = Templates::load(None).unwrap();
    let _ = t;
}
