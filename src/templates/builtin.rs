//! The repo's `templates/` folder, embedded at compile time: the defaults every override folder
//! is layered on.

macro_rules! embed {
    ($($name:literal),* $(,)?) => {
        /// (name relative to `templates/`, source)
        pub(super) const TEMPLATES: &[(&str, &str)] =
            &[$(($name, include_str!(concat!("../../templates/", $name)))),*];
    };
}

embed!(
    "email/base.html",
    "email/base.txt",
    "email/chat_message.created.subject.txt",
    "email/chat_message.created.txt",
    "email/chat_message.created.html",
    "email/lifecycle_message.created.subject.txt",
    "email/lifecycle_message.created.txt",
    "email/lifecycle_message.created.html",
    "email/chat_message.read.subject.txt",
    "email/chat_message.read.txt",
    "email/chat_message.read.html",
    "email/order.chat_expired.subject.txt",
    "email/order.chat_expired.txt",
    "email/order.chat_expired.html",
    "email/digest.subject.txt",
    "email/digest.txt",
    "email/digest.html",
    "slack/footer.json",
    "slack/chat_message.created.json",
    "slack/chat_message.created.txt",
    "slack/lifecycle_message.created.json",
    "slack/lifecycle_message.created.txt",
    "slack/chat_message.read.json",
    "slack/chat_message.read.txt",
    "slack/order.chat_expired.json",
    "slack/order.chat_expired.txt",
);

#[cfg(test)]
mod tests {
    use super::TEMPLATES;
    use std::path::Path;

    /// A file added to `templates/` but not embedded would silently never be used.
    #[test]
    fn every_file_in_the_templates_folder_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let mut on_disk = Vec::new();
        for sub in ["email", "slack"] {
            for entry in std::fs::read_dir(root.join(sub)).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                on_disk.push(format!("{sub}/{name}"));
            }
        }
        on_disk.sort();
        let mut embedded: Vec<_> = TEMPLATES.iter().map(|(n, _)| n.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }
}
