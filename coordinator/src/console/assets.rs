//! The page, embedded in the binary: plain HTML, CSS and JavaScript, no build step and
//! nothing fetched from elsewhere.

const INDEX_HTML: &str = include_str!("static/index.html");
const CONSOLE_JS: &str = include_str!("static/console.js");
const CONSOLE_CSS: &str = include_str!("static/console.css");
const FAVICON_SVG: &str = include_str!("static/favicon.svg");

/// The embedded file served at `path`, with its content type.
pub fn asset(path: &str) -> Option<(&'static [u8], &'static str)> {
    match path {
        "/" | "/index.html" => Some((INDEX_HTML.as_bytes(), "text/html; charset=utf-8")),
        "/console.js" => Some((CONSOLE_JS.as_bytes(), "text/javascript; charset=utf-8")),
        "/console.css" => Some((CONSOLE_CSS.as_bytes(), "text/css; charset=utf-8")),
        "/favicon.ico" | "/favicon.svg" => Some((FAVICON_SVG.as_bytes(), "image/svg+xml")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_embedded_files() {
        let (html, _) = asset("/").expect("index");
        let html = std::str::from_utf8(html).expect("utf-8");
        assert!(html.contains("console.js") && html.contains("console.css"));
        for text in [html, CONSOLE_JS, CONSOLE_CSS] {
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "an outside URL"
            );
        }
        assert!(asset("/nothing").is_none());
    }
}
