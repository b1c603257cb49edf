//! The browser client, built into the binary: plain ES modules and CSS from `web/`, no
//! build step. A deployment is one file.

macro_rules! files {
    ($($name:literal => $ct:literal),* $(,)?) => {
        const FILES: &[(&str, &str, &str)] = &[
            $(($name, $ct, include_str!(concat!("../web/", $name))),)*
        ];
    };
}

files! {
    "index.html" => "text/html; charset=utf-8",
    "style.css" => "text/css; charset=utf-8",
    "app.js" => "text/javascript; charset=utf-8",
    "meeting.js" => "text/javascript; charset=utf-8",
}

/// The content type and body of a web client file.
pub fn file(name: &str) -> Option<(&'static str, &'static str)> {
    FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, ct, body)| (*ct, *body))
}
