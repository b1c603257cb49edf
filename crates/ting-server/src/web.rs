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
    "e2ee.js" => "text/javascript; charset=utf-8",
    "e2ee-worker.js" => "text/javascript; charset=utf-8",
}

/// The content type and body of a web client file.
pub fn file(name: &str) -> Option<(&'static str, std::borrow::Cow<'static, str>)> {
    #[cfg(debug_assertions)]
    if let Some(dir) = std::env::var_os("TING_WEB_DIR") {
        return from_dir(std::path::Path::new(&dir), name);
    }
    FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, ct, body)| (*ct, std::borrow::Cow::Borrowed(*body)))
}

/// A development aid in debug builds only: with `TING_WEB_DIR=<dir>` the client is read
/// from that directory at every request, so a change to it needs no rebuild. Plain names of
/// `.html`, `.css` and `.js` files only.
#[cfg(debug_assertions)]
fn from_dir(
    dir: &std::path::Path,
    name: &str,
) -> Option<(&'static str, std::borrow::Cow<'static, str>)> {
    let ct = match name.rsplit_once('.')?.1 {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        _ => return None,
    };
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        || name.starts_with('.')
    {
        return None;
    }
    let body = std::fs::read_to_string(dir.join(name)).ok()?;
    Some((ct, std::borrow::Cow::Owned(body)))
}
