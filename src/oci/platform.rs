//! OCI platforms (`os/architecture[/variant]`) and the rules for choosing an
//! image index entry that can run on this host. Normalization and the ordered
//! fallbacks follow containerd's `platforms` module (`Normalize`, `Only`,
//! `platformVector`), so that an index resolves to the same manifest here as it
//! does under containerd: an `arm/v7` host also takes `arm/v6` and `arm/v5`
//! images, in that order, an `amd64` host also takes `386`, and an `arm64` host
//! also takes 32-bit `arm` images. This module does no I/O; the host platform
//! comes from the compile target, not from `/proc/cpuinfo`.
//!
//! The behaviour followed is containerd/platforms `main` in the v1.0.0-rc
//! series (the table-driven arm64 variants of containerd/platforms#18 and the
//! `os.features` subset rule of containerd/platforms#20). Where it differs
//! from that code, the difference is written down at the item it concerns.

use crate::reference::bounded_echo;
use std::cmp::Reverse;
use std::fmt;

/// A platform as an image index or image config states it.
///
/// The fields are public and unvalidated because they describe what a
/// registry sent, not something this daemon vouches for. Compare platforms
/// through [`Platform::normalized`] or a [`PlatformMatcher`], never with `==`
/// on the raw values (`aarch64` and `arm64/v8` are the same platform).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    pub os_version: Option<String>,
    pub os_features: Vec<String>,
}

/// Decides which platforms can stand in for a wanted platform, and ranks them.
///
/// Built with [`PlatformMatcher::new`]; `rank` gives the position of the first
/// fallback a candidate satisfies (0 is the wanted platform itself), so a
/// lower rank is preferred. See [`PlatformMatcher::order_candidates`] for
/// choosing among index entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformMatcher {
    /// The wanted platform, normalized.
    wanted: Platform,
    /// containerd's `platformVector`, in preference order. Every entry shares
    /// the OS and OS features of `wanted`, so only architecture and variant
    /// are stored.
    fallbacks: Vec<Fallback>,
}

/// Which part of a platform specifier an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlatformPart {
    Os,
    Architecture,
    Variant,
}

/// Why a platform specifier such as `linux/arm64/v8` could not be parsed.
/// Every variant carries the offending text, cut to a bounded length.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlatformError {
    #[error("empty platform")]
    Empty,
    #[error("platform is {length_bytes} bytes long, the maximum is {max_bytes}")]
    TooLong {
        length_bytes: usize,
        max_bytes: usize,
    },
    #[error("platform {specifier:?} has more than three '/'-separated parts")]
    TooManyParts { specifier: String },
    #[error("platform {specifier:?} has an empty {part}")]
    EmptyPart {
        specifier: String,
        part: PlatformPart,
    },
    #[error("invalid {part} {value:?} in platform {specifier:?}")]
    InvalidPart {
        specifier: String,
        part: PlatformPart,
        value: String,
    },
    #[error("{value:?} is neither a known operating system nor a known architecture")]
    UnknownOsOrArchitecture { value: String },
}

/// One step of the fallback vector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fallback {
    /// Exactly this architecture and variant (both already normalized).
    Exact {
        architecture: String,
        variant: Option<String>,
    },
    /// `architecture` with the variants `v{highest}`, `v{highest - 1}`, …,
    /// `v{lowest}`, in that order. containerd writes these out one by one; a
    /// range keeps a silly wanted variant such as `arm/v99999999` from
    /// allocating a vector of that length while ranking the same way.
    Descending {
        architecture: &'static str,
        highest: i64,
        lowest: i64,
    },
}

/// The longest platform specifier [`Platform::parse`] reads. Real ones are
/// under 30 bytes; the bound keeps error messages and work small.
const SPECIFIER_BYTES_MAX: usize = 256;

/// The operating system this daemon serves images for. containerd uses
/// `runtime.GOOS`; a CRI image service on Linux serves Linux images whatever
/// machine the code was compiled on.
const HOST_OS: &str = "linux";

/// Go's `GOOS` values (containerd `isKnownOS`), after normalization.
const KNOWN_OPERATING_SYSTEMS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "windows",
    "zos",
];

/// Go's `GOARCH` values (containerd `isKnownArch`), after normalization.
const KNOWN_ARCHITECTURES: &[&str] = &[
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "ppc64",
    "ppc64le",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

/// The arm64 variants containerd knows, each with the (major, highest minor)
/// pairs it can run, best first. This is containerd's `arm64variantToVersion`:
/// Armv9.x is compatible with Armv8.(x+5), capped at Armv8.9.
const ARM64_VARIANT_VERSIONS: &[(&str, &[(u8, u8)])] = &[
    ("v8", &[(8, 0)]),
    ("v8.0", &[(8, 0)]),
    ("v8.1", &[(8, 1)]),
    ("v8.2", &[(8, 2)]),
    ("v8.3", &[(8, 3)]),
    ("v8.4", &[(8, 4)]),
    ("v8.5", &[(8, 5)]),
    ("v8.6", &[(8, 6)]),
    ("v8.7", &[(8, 7)]),
    ("v8.8", &[(8, 8)]),
    ("v8.9", &[(8, 9)]),
    ("v9", &[(9, 0), (8, 5)]),
    ("v9.0", &[(9, 0), (8, 5)]),
    ("v9.1", &[(9, 1), (8, 6)]),
    ("v9.2", &[(9, 2), (8, 7)]),
    ("v9.3", &[(9, 3), (8, 8)]),
    ("v9.4", &[(9, 4), (8, 9)]),
    ("v9.5", &[(9, 5), (8, 9)]),
    ("v9.6", &[(9, 6), (8, 9)]),
    ("v9.7", &[(9, 7), (8, 9)]),
];

impl Platform {
    /// A platform with only an OS and an architecture.
    pub fn new(os: impl Into<String>, architecture: impl Into<String>) -> Platform {
        Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant: None,
            os_version: None,
            os_features: Vec::new(),
        }
    }

    /// The same platform with `variant` set.
    pub fn with_variant(mut self, variant: impl Into<String>) -> Platform {
        self.variant = Some(variant.into());
        self
    }

    /// Parses a specifier `os[/architecture[/variant]]` (for example
    /// `linux/arm64/v8`) and returns it [normalized](Platform::normalized).
    ///
    /// Like containerd's `Parse`, a single word is taken as an OS when it is a
    /// known one (the architecture then comes from [`Platform::host_default`])
    /// and otherwise as an architecture on Linux. Parts may hold ASCII letters,
    /// digits, `_` and `-`; the variant may also hold `.`, which containerd
    /// refuses but which the OCI spec needs for arm64 variants like `v8.2`.
    /// containerd's `os(version)` form is not accepted.
    pub fn parse(specifier: &str) -> Result<Platform, PlatformError> {
        if specifier.is_empty() {
            return Err(PlatformError::Empty);
        }
        if specifier.len() > SPECIFIER_BYTES_MAX {
            return Err(PlatformError::TooLong {
                length_bytes: specifier.len(),
                max_bytes: SPECIFIER_BYTES_MAX,
            });
        }
        let parts: Vec<&str> = specifier.split('/').collect();
        let part_kinds = [
            PlatformPart::Os,
            PlatformPart::Architecture,
            PlatformPart::Variant,
        ];
        if parts.len() > part_kinds.len() {
            return Err(PlatformError::TooManyParts {
                specifier: bounded_echo(specifier),
            });
        }
        for (part, kind) in parts.iter().zip(part_kinds) {
            if part.is_empty() {
                return Err(PlatformError::EmptyPart {
                    specifier: bounded_echo(specifier),
                    part: kind,
                });
            }
            let allows_dot = kind == PlatformPart::Variant;
            let valid = part.bytes().all(|byte| {
                byte.is_ascii_alphanumeric()
                    || byte == b'_'
                    || byte == b'-'
                    || (allows_dot && byte == b'.')
            });
            if !valid {
                return Err(PlatformError::InvalidPart {
                    specifier: bounded_echo(specifier),
                    part: kind,
                    value: bounded_echo(part),
                });
            }
        }

        let platform = match parts.as_slice() {
            [word] => {
                let os = normalize_os(word);
                if KNOWN_OPERATING_SYSTEMS.contains(&os.as_str()) {
                    let host = Platform::host_default();
                    Platform {
                        os,
                        architecture: host.architecture,
                        variant: host.variant,
                        os_version: None,
                        os_features: Vec::new(),
                    }
                } else {
                    let (architecture, variant) = normalize_architecture(word, "");
                    if !KNOWN_ARCHITECTURES.contains(&architecture.as_str()) {
                        return Err(PlatformError::UnknownOsOrArchitecture {
                            value: bounded_echo(word),
                        });
                    }
                    Platform {
                        os: HOST_OS.to_owned(),
                        architecture,
                        variant,
                        os_version: None,
                        os_features: Vec::new(),
                    }
                }
            }
            [os, architecture] => Platform::new(*os, *architecture),
            [os, architecture, variant] => Platform::new(*os, *architecture).with_variant(*variant),
            // The length was checked above; an empty split cannot happen
            // because `split` always yields at least one item.
            _ => {
                return Err(PlatformError::TooManyParts {
                    specifier: bounded_echo(specifier),
                });
            }
        };
        Ok(platform.normalized())
    }

    /// The platform of this build: `linux` and the Go name of the compile
    /// target's architecture (`x86_64` is `amd64`, `aarch64` is `arm64`, …).
    ///
    /// 32-bit `arm` gets variant `v7`. containerd reads the real variant from
    /// `/proc/cpuinfo`; this module does no I/O, and v7 (armhf) is what a
    /// Rust `arm*-linux-gnueabihf` build assumes anyway.
    pub fn host_default() -> Platform {
        let (architecture, variant) =
            go_architecture(std::env::consts::ARCH, cfg!(target_endian = "little"));
        Platform {
            os: HOST_OS.to_owned(),
            architecture,
            variant: variant.map(str::to_owned),
            os_version: None,
            os_features: Vec::new(),
        }
        .normalized()
    }

    /// The canonical form, as containerd's `Normalize` computes it: OS and
    /// architecture lowercased, `macos` is `darwin`, `aarch64` is `arm64`,
    /// `x86_64` and `x86-64` are `amd64`, `i386` is `386`, `armhf` is
    /// `arm/v7`, `armel` is `arm/v6`, bare `arm` is `arm/v7`, and the
    /// default variants are dropped (`amd64/v1`, `arm64/v8` and `arm64/v8.0`
    /// become plain `amd64` and `arm64`; `arm64/9.0` becomes `arm64/v9`).
    /// OS features are sorted and deduplicated. An empty OS means the host's
    /// (`linux`), and an empty variant or OS version is `None`.
    pub fn normalized(&self) -> Platform {
        let (architecture, variant) =
            normalize_architecture(&self.architecture, self.variant.as_deref().unwrap_or(""));
        let mut os_features = self.os_features.clone();
        os_features.sort();
        os_features.dedup();
        Platform {
            os: normalize_os(&self.os),
            architecture,
            variant,
            os_version: self
                .os_version
                .clone()
                .filter(|version| !version.is_empty()),
            os_features,
        }
    }
}

impl fmt::Display for Platform {
    /// `os/architecture[/variant]`, the form users type; the OS version and
    /// features are not shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match self.variant.as_deref() {
            Some(variant) if !variant.is_empty() => write!(f, "/{variant}"),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for PlatformPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PlatformPart::Os => "os",
            PlatformPart::Architecture => "architecture",
            PlatformPart::Variant => "variant",
        })
    }
}

impl PlatformMatcher {
    /// The matcher of containerd's `platforms.Only(wanted)`.
    ///
    /// The fallbacks, in preference order, after normalizing `wanted`:
    /// - `amd64/vN`: `amd64/vN`, `amd64/v(N-1)`, …, `amd64` (v1), then `386`.
    ///   Plain `amd64` is `amd64`, then `386`.
    /// - `arm/vN`: `arm/vN`, `arm/v(N-1)`, …, `arm/v5`. Bare `arm` is `arm/v7`.
    /// - `arm64` (v8): `arm64`, then `arm/v8`, `arm/v7`, `arm/v6`, `arm/v5`.
    /// - `arm64/v8.x`: `arm64/v8.x` down to `arm64` (v8), then `arm/v8` … `arm/v5`.
    /// - `arm64/v9.x`: `arm64/v9.x` down to `arm64/v9`, then `arm64/v8.(x+5)`
    ///   (at most v8.9) down to `arm64`, then `arm/v8` … `arm/v5`.
    /// - anything else: only itself.
    ///
    /// Every fallback keeps the wanted OS. A candidate also has to declare
    /// only OS features that the wanted platform declares (containerd's
    /// subset rule), so an image needing `os.features` is never picked for a
    /// host that does not claim them. The OS version is not compared: that is
    /// Windows-only logic in containerd, and this daemon serves Linux.
    ///
    /// One deliberate difference: containerd's table-driven arm64 code
    /// returns an empty vector for an arm64 variant outside its table (for
    /// example `arm64/v10`), so such a wanted platform matches nothing, not
    /// even itself. Here it matches itself and nothing else.
    pub fn new(wanted: &Platform) -> PlatformMatcher {
        let wanted = wanted.normalized();
        let fallbacks = platform_vector(&wanted.architecture, wanted.variant.as_deref());
        PlatformMatcher { wanted, fallbacks }
    }

    /// The wanted platform, normalized.
    pub fn wanted(&self) -> &Platform {
        &self.wanted
    }

    /// The position of the first fallback that `candidate` satisfies, or
    /// `None` when it can run none of them. 0 is the wanted platform itself;
    /// lower is preferred.
    pub fn rank(&self, candidate: &Platform) -> Option<usize> {
        let candidate = candidate.normalized();
        if candidate.os != self.wanted.os {
            return None;
        }
        if !is_subset_of_sorted(&candidate.os_features, &self.wanted.os_features) {
            return None;
        }
        let mut position: usize = 0;
        for fallback in &self.fallbacks {
            match fallback {
                Fallback::Exact {
                    architecture,
                    variant,
                } => {
                    if candidate.architecture == *architecture && candidate.variant == *variant {
                        return Some(position);
                    }
                    position = position.saturating_add(1);
                }
                Fallback::Descending {
                    architecture,
                    highest,
                    lowest,
                } => {
                    if candidate.architecture == *architecture
                        && let Some(number) =
                            variant_number(architecture, candidate.variant.as_deref())
                        && (*lowest..=*highest).contains(&number)
                    {
                        return Some(
                            position.saturating_add(count_to_usize(highest.abs_diff(number))),
                        );
                    }
                    let length = highest.abs_diff(*lowest).saturating_add(1);
                    position = position.saturating_add(count_to_usize(length));
                }
            }
        }
        None
    }

    /// Whether `candidate` can stand in for the wanted platform at all.
    pub fn matches(&self, candidate: &Platform) -> bool {
        self.rank(candidate).is_some()
    }

    /// The indexes of `candidates` (the `platform` of each index entry, in
    /// index order) to try, best first, the way containerd's
    /// `images.Manifest` filters and sorts an index.
    ///
    /// Entries whose platform matches come first, by rank; at equal rank the
    /// one declaring more OS features wins (containerd/platforms#20), and
    /// after that index order (a stable sort, as the OCI spec asks: "use the
    /// first entry that matches"). Entries without a platform come last, in
    /// index order: containerd keeps them and checks the platform in their
    /// image config instead, which the caller has to do after fetching it.
    /// Entries whose platform does not match are left out.
    pub fn order_candidates<'a>(
        &self,
        candidates: impl IntoIterator<Item = Option<&'a Platform>>,
    ) -> Vec<usize> {
        let mut ranked: Vec<(usize, Reverse<usize>, usize)> = Vec::new();
        let mut without_platform: Vec<usize> = Vec::new();
        for (index, candidate) in candidates.into_iter().enumerate() {
            match candidate {
                Some(platform) => {
                    if let Some(rank) = self.rank(platform) {
                        ranked.push((rank, Reverse(platform.os_features.len()), index));
                    }
                }
                None => without_platform.push(index),
            }
        }
        ranked.sort();
        ranked
            .into_iter()
            .map(|(_, _, index)| index)
            .chain(without_platform)
            .collect()
    }
}

/// containerd's `platformVector` for an already normalized architecture and
/// variant.
fn platform_vector(architecture: &str, variant: Option<&str>) -> Vec<Fallback> {
    let exact_self = Fallback::Exact {
        architecture: architecture.to_owned(),
        variant: variant.map(str::to_owned),
    };
    match architecture {
        "amd64" => {
            let mut vector = vec![exact_self];
            if let Some(version) = go_atoi_after_v(variant.unwrap_or(""))
                && version > 1
            {
                vector.push(Fallback::Descending {
                    architecture: "amd64",
                    highest: version - 1,
                    lowest: 1,
                });
            }
            vector.push(Fallback::Exact {
                architecture: "386".to_owned(),
                variant: None,
            });
            vector
        }
        "arm" => arm_vector(variant.unwrap_or("")),
        "arm64" => {
            let variant = variant.unwrap_or("v8");
            let Some((_, versions)) = ARM64_VARIANT_VERSIONS
                .iter()
                .find(|(name, _)| *name == variant)
            else {
                // See `PlatformMatcher::new` for why this is not empty.
                return vec![exact_self];
            };
            let mut vector = Vec::new();
            for &(major, highest_minor) in versions.iter() {
                for minor in (0..=highest_minor).rev() {
                    let arm64_variant = if minor == 0 {
                        format!("v{major}")
                    } else {
                        format!("v{major}.{minor}")
                    };
                    let (architecture, variant) = normalize_architecture("arm64", &arm64_variant);
                    vector.push(Fallback::Exact {
                        architecture,
                        variant,
                    });
                }
            }
            // Every arm64 variant in the table runs 32-bit arm/v8 and below.
            vector.extend(arm_vector("v8"));
            vector
        }
        _ => vec![exact_self],
    }
}

/// The 32-bit arm part of the vector: the variant itself, then each lower
/// numbered variant down to v5.
fn arm_vector(variant: &str) -> Vec<Fallback> {
    let (architecture, normalized_variant) = normalize_architecture("arm", variant);
    let mut vector = vec![Fallback::Exact {
        architecture,
        variant: normalized_variant,
    }];
    if let Some(version) = go_atoi_after_v(variant)
        && version > 5
    {
        vector.push(Fallback::Descending {
            architecture: "arm",
            highest: version - 1,
            lowest: 5,
        });
    }
    vector
}

/// containerd's `strconv.Atoi(strings.TrimPrefix(variant, "v"))`: one leading
/// `v` removed, then an optionally signed decimal that fits in 64 bits.
/// Rust's `i64` parser accepts exactly what Go's `Atoi` accepts here.
fn go_atoi_after_v(variant: &str) -> Option<i64> {
    variant.strip_prefix('v').unwrap_or(variant).parse().ok()
}

/// The number N of a candidate's normalized variant as a [`Fallback::Descending`]
/// entry would have produced it: `v` followed by N in Go's `strconv.Itoa` form
/// (no sign, no leading zero). For amd64 the entry `v1` normalizes to no
/// variant, so no variant is 1 there.
fn variant_number(architecture: &str, variant: Option<&str>) -> Option<i64> {
    let Some(variant) = variant else {
        return (architecture == "amd64").then_some(1);
    };
    let digits = variant.strip_prefix('v')?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|byte| byte.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !canonical {
        return None;
    }
    digits.parse().ok()
}

fn count_to_usize(count: u64) -> usize {
    usize::try_from(count).unwrap_or(usize::MAX)
}

/// Whether every item of `candidate` is in `wanted`; both are sorted and free
/// of duplicates (as [`Platform::normalized`] leaves them).
fn is_subset_of_sorted(candidate: &[String], wanted: &[String]) -> bool {
    let mut wanted_items = wanted.iter();
    candidate
        .iter()
        .all(|feature| wanted_items.any(|wanted_feature| wanted_feature == feature))
}

/// containerd's `normalizeOS`.
fn normalize_os(os: &str) -> String {
    if os.is_empty() {
        return HOST_OS.to_owned();
    }
    let os = os.to_lowercase();
    if os == "macos" {
        "darwin".to_owned()
    } else {
        os
    }
}

/// containerd's `normalizeArch`, with an empty variant returned as `None`.
fn normalize_architecture(architecture: &str, variant: &str) -> (String, Option<String>) {
    let architecture = architecture.to_lowercase();
    let variant = variant.to_lowercase();
    let (architecture, variant) = match architecture.as_str() {
        "i386" => ("386".to_owned(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            let variant = if variant == "v1" {
                String::new()
            } else {
                variant
            };
            ("amd64".to_owned(), variant)
        }
        "aarch64" | "arm64" => {
            let variant = match variant.as_str() {
                "8" | "v8" | "v8.0" => String::new(),
                "9" | "9.0" | "v9.0" => "v9".to_owned(),
                _ => variant,
            };
            ("arm64".to_owned(), variant)
        }
        "armhf" => ("arm".to_owned(), "v7".to_owned()),
        "armel" => ("arm".to_owned(), "v6".to_owned()),
        "arm" => {
            let variant = match variant.as_str() {
                "" | "7" => "v7".to_owned(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm".to_owned(), variant)
        }
        _ => (architecture, variant),
    };
    let variant = (!variant.is_empty()).then_some(variant);
    (architecture, variant)
}

/// The Go `GOARCH` name (and default variant) of a Rust
/// `std::env::consts::ARCH` value. Names Go does not share are passed through.
fn go_architecture(rust_architecture: &str, little_endian: bool) -> (String, Option<&'static str>) {
    let (architecture, variant) = match (rust_architecture, little_endian) {
        ("x86_64", _) => ("amd64", None),
        ("x86", _) => ("386", None),
        ("aarch64", true) => ("arm64", None),
        ("aarch64", false) => ("arm64be", None),
        ("arm", true) => ("arm", Some("v7")),
        ("arm", false) => ("armbe", None),
        ("powerpc64", true) => ("ppc64le", None),
        ("powerpc64", false) => ("ppc64", None),
        ("powerpc", _) => ("ppc", None),
        ("mips", true) => ("mipsle", None),
        ("mips", false) => ("mips", None),
        ("mips64", true) => ("mips64le", None),
        ("mips64", false) => ("mips64", None),
        ("loongarch64", _) => ("loong64", None),
        ("wasm32", _) => ("wasm", None),
        // riscv64, s390x and sparc64 are spelled the same in Go.
        (other, _) => return (other.to_owned(), None),
    };
    (architecture.to_owned(), variant)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(specifier: &str) -> Platform {
        // Test inputs are written as os/arch[/variant] without normalizing, so
        // that the tables can feed raw index values such as "aarch64".
        let mut parts = specifier.split('/');
        let os = parts.next().unwrap_or_default();
        let architecture = parts.next().unwrap_or_default();
        let mut platform = Platform::new(os, architecture);
        if let Some(variant) = parts.next() {
            platform.variant = Some(variant.to_owned());
        }
        platform
    }

    #[test]
    fn parse_table() {
        let host = Platform::host_default();
        let cases: Vec<(&str, Result<Platform, PlatformError>)> = vec![
            ("linux/arm64/v8", Ok(Platform::new("linux", "arm64"))),
            ("linux/arm64", Ok(Platform::new("linux", "arm64"))),
            (
                "linux/arm64/v8.2",
                Ok(Platform::new("linux", "arm64").with_variant("v8.2")),
            ),
            (
                "linux/arm/v6",
                Ok(Platform::new("linux", "arm").with_variant("v6")),
            ),
            (
                "linux/arm",
                Ok(Platform::new("linux", "arm").with_variant("v7")),
            ),
            (
                "linux/armhf",
                Ok(Platform::new("linux", "arm").with_variant("v7")),
            ),
            (
                "linux/armel",
                Ok(Platform::new("linux", "arm").with_variant("v6")),
            ),
            ("Linux/X86_64", Ok(Platform::new("linux", "amd64"))),
            ("linux/x86-64", Ok(Platform::new("linux", "amd64"))),
            ("linux/amd64/v1", Ok(Platform::new("linux", "amd64"))),
            (
                "linux/amd64/v3",
                Ok(Platform::new("linux", "amd64").with_variant("v3")),
            ),
            ("linux/i386", Ok(Platform::new("linux", "386"))),
            ("macos/arm64", Ok(Platform::new("darwin", "arm64"))),
            ("windows/amd64", Ok(Platform::new("windows", "amd64"))),
            ("arm64", Ok(Platform::new("linux", "arm64"))),
            ("aarch64", Ok(Platform::new("linux", "arm64"))),
            (
                "linux",
                Ok(Platform {
                    os: "linux".into(),
                    ..host.clone()
                }),
            ),
            ("", Err(PlatformError::Empty)),
            (
                "linux/arm64/v8/extra",
                Err(PlatformError::TooManyParts {
                    specifier: "linux/arm64/v8/extra".into(),
                }),
            ),
            (
                "linux//v7",
                Err(PlatformError::EmptyPart {
                    specifier: "linux//v7".into(),
                    part: PlatformPart::Architecture,
                }),
            ),
            (
                "/amd64",
                Err(PlatformError::EmptyPart {
                    specifier: "/amd64".into(),
                    part: PlatformPart::Os,
                }),
            ),
            (
                "linux/amd64/",
                Err(PlatformError::EmptyPart {
                    specifier: "linux/amd64/".into(),
                    part: PlatformPart::Variant,
                }),
            ),
            (
                "linux/amd 64",
                Err(PlatformError::InvalidPart {
                    specifier: "linux/amd 64".into(),
                    part: PlatformPart::Architecture,
                    value: "amd 64".into(),
                }),
            ),
            (
                "linux.x/amd64",
                Err(PlatformError::InvalidPart {
                    specifier: "linux.x/amd64".into(),
                    part: PlatformPart::Os,
                    value: "linux.x".into(),
                }),
            ),
            (
                "windows(10.0.17763)/amd64",
                Err(PlatformError::InvalidPart {
                    specifier: "windows(10.0.17763)/amd64".into(),
                    part: PlatformPart::Os,
                    value: "windows(10.0.17763)".into(),
                }),
            ),
            (
                "linux/arm64/v8*",
                Err(PlatformError::InvalidPart {
                    specifier: "linux/arm64/v8*".into(),
                    part: PlatformPart::Variant,
                    value: "v8*".into(),
                }),
            ),
            (
                "toaster",
                Err(PlatformError::UnknownOsOrArchitecture {
                    value: "toaster".into(),
                }),
            ),
        ];
        for (specifier, expected) in cases {
            assert_eq!(Platform::parse(specifier), expected, "{specifier:?}");
        }
    }

    #[test]
    fn parse_bounds_long_input() {
        let long = "a".repeat(SPECIFIER_BYTES_MAX + 1);
        assert_eq!(
            Platform::parse(&long),
            Err(PlatformError::TooLong {
                length_bytes: SPECIFIER_BYTES_MAX + 1,
                max_bytes: SPECIFIER_BYTES_MAX,
            })
        );
        let message = Platform::parse("linux/é")
            .expect_err("non-ascii")
            .to_string();
        assert_eq!(
            message,
            "invalid architecture \"é\" in platform \"linux/é\""
        );
    }

    #[test]
    fn normalized_table() {
        let cases: Vec<(Platform, Platform)> = vec![
            (platform("Linux/AArch64"), Platform::new("linux", "arm64")),
            (platform("linux/arm64/8"), Platform::new("linux", "arm64")),
            (platform("linux/arm64/V8"), Platform::new("linux", "arm64")),
            (
                platform("linux/arm64/v8.0"),
                Platform::new("linux", "arm64"),
            ),
            (
                platform("linux/arm64/9"),
                Platform::new("linux", "arm64").with_variant("v9"),
            ),
            (
                platform("linux/arm64/v9.0"),
                Platform::new("linux", "arm64").with_variant("v9"),
            ),
            (
                platform("linux/arm64/v8.1"),
                Platform::new("linux", "arm64").with_variant("v8.1"),
            ),
            (
                platform("linux/armhf/v6"),
                Platform::new("linux", "arm").with_variant("v7"),
            ),
            (
                platform("linux/arm/7"),
                Platform::new("linux", "arm").with_variant("v7"),
            ),
            (
                platform("linux/arm/5"),
                Platform::new("linux", "arm").with_variant("v5"),
            ),
            (
                platform("linux/arm/4"),
                Platform::new("linux", "arm").with_variant("4"),
            ),
            (
                platform("linux/i386/whatever"),
                Platform::new("linux", "386"),
            ),
            (
                platform("linux/x86_64/v2"),
                Platform::new("linux", "amd64").with_variant("v2"),
            ),
            (
                platform("linux/386/v2"),
                Platform::new("linux", "386").with_variant("v2"),
            ),
            (platform("/riscv64"), Platform::new("linux", "riscv64")),
            (
                Platform {
                    variant: Some(String::new()),
                    os_version: Some(String::new()),
                    os_features: vec!["b".into(), "a".into(), "b".into()],
                    ..Platform::new("linux", "amd64")
                },
                Platform {
                    os_features: vec!["a".into(), "b".into()],
                    ..Platform::new("linux", "amd64")
                },
            ),
        ];
        for (input, expected) in cases {
            let normalized = input.normalized();
            assert_eq!(normalized, expected, "{input:?}");
            assert_eq!(
                normalized.normalized(),
                normalized,
                "idempotent for {input:?}"
            );
        }
    }

    #[test]
    fn display_forms() {
        assert_eq!(platform("linux/arm64/v8").to_string(), "linux/arm64/v8");
        assert_eq!(Platform::new("linux", "amd64").to_string(), "linux/amd64");
        assert_eq!(
            Platform::new("linux", "arm").with_variant("").to_string(),
            "linux/arm"
        );
    }

    #[test]
    fn go_architecture_names() {
        let cases = [
            (("x86_64", true), ("amd64", None)),
            (("x86", true), ("386", None)),
            (("aarch64", true), ("arm64", None)),
            (("arm", true), ("arm", Some("v7"))),
            (("powerpc64", true), ("ppc64le", None)),
            (("powerpc64", false), ("ppc64", None)),
            (("s390x", false), ("s390x", None)),
            (("riscv64", true), ("riscv64", None)),
            (("loongarch64", true), ("loong64", None)),
            (("mips64", true), ("mips64le", None)),
        ];
        for ((rust, little_endian), (go, variant)) in cases {
            assert_eq!(
                go_architecture(rust, little_endian),
                (go.to_owned(), variant),
                "{rust}"
            );
        }
        let host = Platform::host_default();
        assert_eq!(host.os, "linux");
        assert_eq!(host, host.normalized());
        if cfg!(target_arch = "x86_64") {
            assert_eq!(host, Platform::new("linux", "amd64"));
        }
        if cfg!(target_arch = "aarch64") {
            assert_eq!(host, Platform::new("linux", "arm64"));
        }
    }

    /// The wanted platform, then candidates with their expected rank (`None`
    /// for no match).
    type RankCase = (&'static str, Vec<(&'static str, Option<usize>)>);

    /// The wanted platform, the index's entry platforms (`None` for an entry
    /// without one), and the expected order of indexes to try.
    type OrderCase = (&'static str, Vec<Option<&'static str>>, Vec<usize>);

    /// Ranks are positions in containerd's `platformVector`.
    #[test]
    fn rank_table() {
        let cases: Vec<RankCase> = vec![
            (
                "linux/amd64",
                vec![
                    ("linux/amd64", Some(0)),
                    ("linux/x86_64", Some(0)),
                    ("linux/amd64/v1", Some(0)),
                    ("linux/386", Some(1)),
                    ("linux/i386", Some(1)),
                    ("linux/amd64/v2", None),
                    ("linux/arm64", None),
                    ("windows/amd64", None),
                    ("/amd64", Some(0)),
                ],
            ),
            (
                "linux/amd64/v3",
                vec![
                    ("linux/amd64/v3", Some(0)),
                    ("linux/amd64/v2", Some(1)),
                    ("linux/amd64", Some(2)),
                    ("linux/amd64/v1", Some(2)),
                    ("linux/386", Some(3)),
                    ("linux/amd64/v4", None),
                    ("linux/amd64/v02", None),
                ],
            ),
            (
                "linux/386",
                vec![("linux/386", Some(0)), ("linux/amd64", None)],
            ),
            (
                "linux/arm/v8",
                vec![
                    ("linux/arm/v8", Some(0)),
                    ("linux/arm/v7", Some(1)),
                    ("linux/arm", Some(1)),
                    ("linux/armhf", Some(1)),
                    ("linux/arm/v6", Some(2)),
                    ("linux/armel", Some(2)),
                    ("linux/arm/v5", Some(3)),
                    ("linux/arm/v4", None),
                    ("linux/arm64", None),
                ],
            ),
            (
                "linux/arm/v7",
                vec![
                    ("linux/arm/v7", Some(0)),
                    ("linux/arm/v6", Some(1)),
                    ("linux/arm/v5", Some(2)),
                    ("linux/arm/v8", None),
                    ("linux/arm64", None),
                ],
            ),
            (
                "linux/arm/v6",
                vec![
                    ("linux/arm/v6", Some(0)),
                    ("linux/arm/v5", Some(1)),
                    ("linux/arm", None),
                ],
            ),
            (
                "linux/arm/v5",
                vec![("linux/arm/v5", Some(0)), ("linux/arm/v4", None)],
            ),
            (
                "linux/arm/v4",
                vec![("linux/arm/v4", Some(0)), ("linux/arm/v5", None)],
            ),
            (
                "linux/arm64",
                vec![
                    ("linux/arm64", Some(0)),
                    ("linux/arm64/v8", Some(0)),
                    ("linux/aarch64", Some(0)),
                    ("linux/arm/v8", Some(1)),
                    ("linux/arm/v7", Some(2)),
                    ("linux/arm", Some(2)),
                    ("linux/arm/v6", Some(3)),
                    ("linux/arm/v5", Some(4)),
                    ("linux/arm/v4", None),
                    ("linux/arm64/v8.1", None),
                    ("linux/arm64/v9", None),
                    ("linux/amd64", None),
                    ("windows/arm64", None),
                ],
            ),
            (
                "linux/arm64/v8.2",
                vec![
                    ("linux/arm64/v8.2", Some(0)),
                    ("linux/arm64/v8.1", Some(1)),
                    ("linux/arm64", Some(2)),
                    ("linux/arm/v8", Some(3)),
                    ("linux/arm/v5", Some(6)),
                    ("linux/arm64/v8.3", None),
                ],
            ),
            (
                "linux/arm64/v9",
                vec![
                    ("linux/arm64/v9", Some(0)),
                    ("linux/arm64/v9.0", Some(0)),
                    ("linux/arm64/v8.5", Some(1)),
                    ("linux/arm64/v8.1", Some(5)),
                    ("linux/arm64/v8", Some(6)),
                    ("linux/arm/v8", Some(7)),
                    ("linux/arm/v5", Some(10)),
                    ("linux/arm64/v8.6", None),
                    ("linux/arm/v9", None),
                    ("linux/arm64/v9.1", None),
                ],
            ),
            (
                "linux/arm64/v9.6",
                vec![
                    ("linux/arm64/v9.6", Some(0)),
                    ("linux/arm64/v9.1", Some(5)),
                    ("linux/arm64/v9", Some(6)),
                    ("linux/arm64/v8.9", Some(7)),
                    ("linux/arm64", Some(16)),
                    ("linux/arm/v7", Some(18)),
                    ("linux/arm64/v9.7", None),
                ],
            ),
            (
                // Outside containerd's table: only itself (see `new`).
                "linux/arm64/v10",
                vec![
                    ("linux/arm64/v10", Some(0)),
                    ("linux/arm64", None),
                    ("linux/arm/v8", None),
                ],
            ),
            (
                "linux/riscv64",
                vec![("linux/riscv64", Some(0)), ("linux/amd64", None)],
            ),
            (
                "linux/ppc64le",
                vec![("linux/ppc64le", Some(0)), ("linux/ppc64", None)],
            ),
            (
                "unknown/unknown",
                vec![("unknown/unknown", Some(0)), ("linux/amd64", None)],
            ),
        ];
        for (wanted, candidates) in cases {
            let matcher = PlatformMatcher::new(&platform(wanted));
            for (candidate, expected) in candidates {
                let candidate_platform = platform(candidate);
                assert_eq!(
                    matcher.rank(&candidate_platform),
                    expected,
                    "wanted {wanted}, candidate {candidate}"
                );
                assert_eq!(
                    matcher.matches(&candidate_platform),
                    expected.is_some(),
                    "wanted {wanted}, candidate {candidate}"
                );
            }
        }
    }

    #[test]
    fn huge_variant_numbers_rank_without_allocating() {
        let matcher = PlatformMatcher::new(&platform("linux/arm/v9223372036854775807"));
        assert_eq!(matcher.fallbacks.len(), 2);
        assert_eq!(
            matcher.rank(&platform("linux/arm/v9223372036854775806")),
            Some(1)
        );
        assert_eq!(
            matcher.rank(&platform("linux/arm/v5")),
            Some(count_to_usize(9_223_372_036_854_775_802))
        );
        // Beyond i64: Atoi fails, so only the exact variant matches.
        let matcher = PlatformMatcher::new(&platform("linux/arm/v99999999999999999999"));
        assert_eq!(matcher.rank(&platform("linux/arm/v7")), None);
        // A signed variant is what Go's Atoi accepts too.
        let matcher = PlatformMatcher::new(&platform("linux/arm/v+7"));
        assert_eq!(matcher.rank(&platform("linux/arm/v6")), Some(1));
        let matcher = PlatformMatcher::new(&platform("linux/amd64/v-3"));
        assert_eq!(matcher.rank(&platform("linux/386")), Some(1));
    }

    #[test]
    fn os_features_must_be_declared_by_the_wanted_platform() {
        let wanted = Platform {
            os_features: vec!["win32k".into(), "fancy".into()],
            ..Platform::new("linux", "amd64")
        };
        let matcher = PlatformMatcher::new(&wanted);
        let with = |features: &[&str]| Platform {
            os_features: features
                .iter()
                .map(|feature| (*feature).to_owned())
                .collect(),
            ..Platform::new("linux", "amd64")
        };
        assert_eq!(matcher.rank(&with(&[])), Some(0));
        assert_eq!(matcher.rank(&with(&["fancy"])), Some(0));
        assert_eq!(matcher.rank(&with(&["win32k", "fancy", "fancy"])), Some(0));
        assert_eq!(matcher.rank(&with(&["other"])), None);
        assert_eq!(matcher.rank(&with(&["fancy", "other"])), None);

        let plain = PlatformMatcher::new(&Platform::new("linux", "amd64"));
        assert_eq!(plain.rank(&with(&["fancy"])), None);
    }

    #[test]
    fn order_candidates_table() {
        let cases: Vec<OrderCase> = vec![
            (
                "linux/arm/v7",
                vec![
                    Some("linux/arm/v6"),
                    Some("linux/arm/v7"),
                    Some("linux/arm64"),
                ],
                vec![1, 0],
            ),
            ("linux/amd64", vec![Some("linux/386")], vec![0]),
            (
                "linux/amd64",
                vec![Some("linux/arm64"), Some("linux/386"), Some("linux/amd64")],
                vec![2, 1],
            ),
            (
                // Ties keep index order: the first matching entry wins.
                "linux/amd64",
                vec![
                    Some("linux/amd64"),
                    Some("linux/x86_64"),
                    Some("linux/amd64/v1"),
                ],
                vec![0, 1, 2],
            ),
            (
                // Attestation manifests (unknown/unknown) never match, and
                // entries without a platform go last.
                "linux/arm64",
                vec![
                    None,
                    Some("linux/amd64"),
                    Some("linux/arm64/v8"),
                    Some("unknown/unknown"),
                    Some("unknown/unknown"),
                    Some("linux/arm/v7"),
                ],
                vec![2, 5, 0],
            ),
            (
                "linux/arm/v8",
                vec![
                    Some("linux/arm/v5"),
                    Some("linux/arm/v6"),
                    Some("linux/arm/v7"),
                ],
                vec![2, 1, 0],
            ),
            (
                "linux/arm64",
                vec![Some("linux/arm/v5"), Some("linux/arm/v7")],
                vec![1, 0],
            ),
            ("linux/arm/v6", vec![Some("linux/arm/v7")], vec![]),
            ("linux/amd64", vec![], vec![]),
        ];
        for (wanted, entries, expected) in cases {
            let matcher = PlatformMatcher::new(&platform(wanted));
            let platforms: Vec<Option<Platform>> =
                entries.iter().map(|entry| entry.map(platform)).collect();
            let order = matcher.order_candidates(platforms.iter().map(Option::as_ref));
            assert_eq!(order, expected, "wanted {wanted}, entries {entries:?}");
        }
    }

    #[test]
    fn order_candidates_prefers_more_os_features_at_equal_rank() {
        let wanted = Platform {
            os_features: vec!["a".into(), "b".into()],
            ..Platform::new("linux", "amd64")
        };
        let plain = Platform::new("linux", "amd64");
        let featured = Platform {
            os_features: vec!["a".into()],
            ..Platform::new("linux", "amd64")
        };
        let fallback = Platform {
            os_features: vec!["a".into(), "b".into()],
            ..Platform::new("linux", "386")
        };
        let matcher = PlatformMatcher::new(&wanted);
        let order = matcher.order_candidates([Some(&fallback), Some(&plain), Some(&featured)]);
        assert_eq!(order, vec![2, 1, 0]);
    }

    #[test]
    fn error_messages_are_lowercase_and_bounded() {
        let huge = format!("linux/{}", "x".repeat(300));
        let message = Platform::parse(&huge).expect_err("too long").to_string();
        assert_eq!(message, "platform is 306 bytes long, the maximum is 256");
        let long_invalid = format!("linux/{}", "é".repeat(120));
        let message = Platform::parse(&long_invalid)
            .expect_err("invalid part")
            .to_string();
        assert!(message.len() < 600, "{message}");
        assert!(message.contains("é…"), "{message}");
        let messages = [
            PlatformError::Empty.to_string(),
            Platform::parse("a/b/c/d").expect_err("parts").to_string(),
            Platform::parse("linux//x").expect_err("empty").to_string(),
        ];
        for message in messages {
            assert!(!message.ends_with('.'), "{message}");
            assert!(
                message
                    .chars()
                    .next()
                    .is_some_and(|first| !first.is_uppercase()),
                "{message}"
            );
        }
        assert_eq!(
            Platform::parse("linux//x").expect_err("empty").to_string(),
            "platform \"linux//x\" has an empty architecture"
        );
    }
}
