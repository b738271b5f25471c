//! A small parser for what clang cannot check in MSL: the `kernel void` signatures with their
//! `[[buffer(i)]]` / builtin attributes (clang ignores unknown attributes), the binding tables in
//! the kernels' header comments, and `constexpr constant uint` constants.

/// Builtin attributes the emulation can feed (see `metal_emu::Builtin`).
pub const BUILTINS: &[&str] = &[
    "thread_position_in_grid",
    "thread_position_in_threadgroup",
    "threadgroup_position_in_grid",
    "threadgroups_per_grid",
    "threads_per_grid",
    "threads_per_threadgroup",
    "thread_index_in_threadgroup",
    "thread_index_in_simdgroup",
    "simdgroup_index_in_threadgroup",
    "simdgroups_per_threadgroup",
    "threads_per_simdgroup",
];

/// Where a kernel parameter comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    /// `[[buffer(i)]]`.
    Buffer(u32),
    /// A builtin such as `[[thread_index_in_simdgroup]]`.
    Builtin(String),
}

/// One kernel parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// The declared type, whitespace-normalized (e.g. `device const float*`).
    pub ty: String,
    /// The parameter name.
    pub name: String,
    /// Its attribute.
    pub attr: Attr,
}

/// `source` without `//` comments.
pub fn strip_comments(source: &str) -> String {
    source
        .lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names of every `kernel void NAME(` in `source` (comments ignored).
pub fn kernel_entries(source: &str) -> Vec<String> {
    let code = strip_comments(source);
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("kernel void ") {
        rest = &rest[i + "kernel void ".len()..];
        let end = rest.find('(').unwrap_or(rest.len());
        out.push(rest[..end].trim().to_string());
    }
    out
}

/// Normalizes whitespace and attaches `*` / `&` to the type (`device float *` -> `device float*`).
fn normalize(ty: &str) -> String {
    ty.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(" *", "*")
        .replace(" &", "&")
}

/// The parameters of kernel `entry` in `source`.
pub fn kernel_params(source: &str, entry: &str) -> Result<Vec<Param>, String> {
    let code = strip_comments(source);
    let head = format!("kernel void {entry}(");
    let start = code
        .find(&head)
        .ok_or_else(|| format!("no `{head}` in the source"))?
        + head.len();
    let mut depth = 1;
    let mut end = start;
    for (i, c) in code[start..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if depth == 0 {
            end = start + i;
            break;
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced parentheses in `{entry}`'s signature"));
    }
    split_params(&code[start..end])
        .iter()
        .map(|p| parse_param(p))
        .collect()
}

/// Splits a parameter list at top-level commas (attributes contain parentheses, not commas).
fn split_params(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in list.chars() {
        match c {
            '(' | '[' | '<' => depth += 1,
            ')' | ']' | '>' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

fn parse_param(text: &str) -> Result<Param, String> {
    let text = text.trim();
    let open = text
        .find("[[")
        .ok_or_else(|| format!("parameter `{text}` has no [[attribute]]"))?;
    let close = text
        .rfind("]]")
        .ok_or_else(|| format!("unterminated attribute in `{text}`"))?;
    let attr_text = text[open + 2..close].trim();
    let decl = text[..open].trim();
    let split = decl
        .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
        .ok_or_else(|| format!("cannot split type and name in `{decl}`"))?;
    let (ty, name) = (normalize(&decl[..=split]), decl[split + 1..].to_string());
    let attr = if let Some(index) = attr_text
        .strip_prefix("buffer(")
        .and_then(|r| r.strip_suffix(')'))
    {
        Attr::Buffer(
            index
                .trim()
                .parse()
                .map_err(|e| format!("bad buffer index in `{text}`: {e}"))?,
        )
    } else if BUILTINS.contains(&attr_text) {
        Attr::Builtin(attr_text.to_string())
    } else {
        return Err(format!("unknown attribute [[{attr_text}]] on `{name}`"));
    };
    Ok(Param { ty, name, attr })
}

/// One line of a kernel's binding table comment: `//   buffer(i)  <type>  <name>: <meaning>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocBinding {
    /// The buffer index.
    pub index: u32,
    /// The documented type (whitespace-normalized).
    pub ty: String,
    /// The documented name.
    pub name: String,
}

/// The binding table documented in `file`'s comments (type and name are separated by two spaces).
pub fn documented_bindings(file: &str) -> Result<Vec<DocBinding>, String> {
    let mut out = Vec::new();
    for line in file.lines() {
        let Some(rest) = line.trim_start().strip_prefix("//") else {
            continue;
        };
        let Some(rest) = rest.trim_start().strip_prefix("buffer(") else {
            continue;
        };
        let (index, rest) = rest
            .split_once(')')
            .ok_or_else(|| format!("bad line `{line}`"))?;
        let (ty, rest) = rest
            .trim()
            .split_once("  ")
            .ok_or_else(|| format!("bad line `{line}`"))?;
        let (name, _) = rest
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("bad line `{line}`"))?;
        out.push(DocBinding {
            index: index
                .parse()
                .map_err(|e| format!("bad index in `{line}`: {e}"))?,
            ty: normalize(ty),
            name: name.trim().to_string(),
        });
    }
    Ok(out)
}

/// The value of `constexpr constant uint NAME = <decimal or 0x hex>u;` in `source`.
pub fn constant_u32(source: &str, name: &str) -> Option<u32> {
    let code = strip_comments(source);
    let head = format!("constexpr constant uint {name} = ");
    let start = code.find(&head)? + head.len();
    let value = code[start..]
        .split(';')
        .next()?
        .trim()
        .trim_end_matches('u');
    match value.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => value.parse().ok(),
    }
}
