// sqlx::migrate! embeds the SQLite backend's migrations at compile time; rebuild when they change.
fn main() {
    println!("cargo:rerun-if-changed=src/store/sqlite/migrations");
}
