//! Audio and video with FFmpeg: conversions between containers and codecs, trimming,
//! scaling, audio extraction, and a video frame as a thumbnail. FFmpeg may open only
//! local files and pipes (no network, no playlists reaching elsewhere), and its progress
//! is reported as the task's `percent`.

use crate::tools::{run, run_lines, Slots, Tool};
use crate::EngineLimits;
use runconvert_core::error::codes;
use runconvert_core::formats::{OptionSpec, OptionType};
use runconvert_core::ops::EngineOptions;
use runconvert_core::TaskError;
use std::path::Path;
use std::process::Command;

pub const VIDEO: &[&str] = &["mp4", "webm", "mov", "mkv", "avi", "gif"];
pub const AUDIO: &[&str] = &["mp3", "wav", "ogg", "flac", "aac", "m4a"];

const VIDEO_CODECS: &[&str] = &["h264", "vp9", "vp8", "mpeg4"];
const AUDIO_CODECS: &[&str] = &["aac", "mp3", "opus", "vorbis", "flac", "pcm"];

static SLOTS: Slots = Slots::new(1);

#[derive(Debug, Clone)]
pub struct Ffmpeg {
    pub ffmpeg: Tool,
    pub ffprobe: Tool,
}

fn ffmpeg_version(line: &str) -> Option<String> {
    line.split_whitespace().nth(2).map(String::from)
}

pub fn options(output: &str) -> Vec<OptionSpec> {
    let mut o = vec![
        OptionSpec {
            name: "trim_start",
            kind: OptionType::Time,
            default: None,
            description: "Start at this time (seconds, or hh:mm:ss[.ms]).",
        },
        OptionSpec {
            name: "trim_end",
            kind: OptionType::Time,
            default: None,
            description: "End at this time (seconds, or hh:mm:ss[.ms]).",
        },
        OptionSpec {
            name: "audio_bitrate",
            kind: OptionType::Bitrate,
            default: None,
            description: "Audio bitrate such as 128k.",
        },
        OptionSpec {
            name: "audio_codec",
            kind: OptionType::Enum(AUDIO_CODECS),
            default: None,
            description: "Audio codec (the format's usual one by default).",
        },
    ];
    if VIDEO.contains(&output) {
        o.extend([
            OptionSpec {
                name: "width",
                kind: OptionType::Integer { min: 16, max: 7680 },
                default: None,
                description: "Output width; the height follows unless given.",
            },
            OptionSpec {
                name: "height",
                kind: OptionType::Integer { min: 16, max: 4320 },
                default: None,
                description: "Output height; the width follows unless given.",
            },
            OptionSpec {
                name: "fps",
                kind: OptionType::Integer { min: 1, max: 120 },
                default: None,
                description: "Frames per second.",
            },
            OptionSpec {
                name: "crf",
                kind: OptionType::Integer { min: 0, max: 63 },
                default: None,
                description: "Constant quality (lower is better; h264 0-51, vp8/vp9 0-63).",
            },
            OptionSpec {
                name: "video_bitrate",
                kind: OptionType::Bitrate,
                default: None,
                description: "Video bitrate such as 2M.",
            },
            OptionSpec {
                name: "video_codec",
                kind: OptionType::Enum(VIDEO_CODECS),
                default: None,
                description: "Video codec (the format's usual one by default).",
            },
        ]);
    }
    o
}

fn bad(msg: String) -> TaskError {
    TaskError::new(codes::INVALID_DATA, msg)
}

fn time_option(o: &EngineOptions, name: &str) -> Result<Option<String>, TaskError> {
    let Some(v) = o.get(name) else { return Ok(None) };
    let s = match v {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s.clone(),
        _ => return Err(bad(format!("option {name} must be seconds or hh:mm:ss"))),
    };
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit() || c == ':' || c == '.') {
        return Err(bad(format!("option {name} must be seconds or hh:mm:ss, got {s:?}")));
    }
    Ok(Some(s))
}

fn bitrate_option(o: &EngineOptions, name: &str) -> Result<Option<String>, TaskError> {
    let Some(v) = o.get(name).and_then(|v| v.as_str()) else {
        return Ok(None);
    };
    let digits = v.trim_end_matches(['k', 'K', 'm', 'M']);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad(format!("option {name} must look like 128k or 2M, got {v:?}")));
    }
    Ok(Some(v.to_string()))
}

fn video_encoder(codec: &str) -> &'static str {
    match codec {
        "vp9" => "libvpx-vp9",
        "vp8" => "libvpx",
        "mpeg4" => "mpeg4",
        _ => "libx264",
    }
}

fn audio_encoder(codec: &str) -> &'static str {
    match codec {
        "mp3" => "libmp3lame",
        "opus" => "libopus",
        "vorbis" => "libvorbis",
        "flac" => "flac",
        "pcm" => "pcm_s16le",
        _ => "aac",
    }
}

/// The usual codecs of a container: (video, audio).
fn default_codecs(output: &str) -> (Option<&'static str>, &'static str) {
    match output {
        "webm" => (Some("vp9"), "opus"),
        "avi" => (Some("mpeg4"), "mp3"),
        "mp4" | "mov" | "mkv" => (Some("h264"), "aac"),
        "gif" => (None, ""),
        "mp3" => (None, "mp3"),
        "wav" => (None, "pcm"),
        "ogg" => (None, "vorbis"),
        "flac" => (None, "flac"),
        _ => (None, "aac"),
    }
}

/// "hh:mm:ss.ms" or seconds → seconds.
fn seconds(s: &str) -> Option<f64> {
    s.split(':')
        .try_fold(0.0, |acc, part| part.parse::<f64>().ok().map(|v| acc * 60.0 + v))
}

impl Ffmpeg {
    pub fn find(probe_version: bool) -> Option<Self> {
        Some(Ffmpeg {
            ffmpeg: Tool::find("ffmpeg", &["-version"], probe_version, ffmpeg_version)?,
            ffprobe: Tool::find("ffprobe", &["-version"], false, ffmpeg_version)?,
        })
    }

    fn base(&self) -> Command {
        let mut cmd = Command::new(&self.ffmpeg.path);
        cmd.args([
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-protocol_whitelist",
            "file,pipe",
        ]);
        cmd
    }

    /// The duration in seconds, if FFmpeg can tell it. The probe also proves the file is
    /// readable, and holds it to the limits before any decoding: its streams, the size of
    /// its frames and its length.
    pub fn duration(&self, input: &Path, name: &str, limits: &EngineLimits) -> Result<Option<f64>, TaskError> {
        let mut cmd = Command::new(&self.ffprobe.path);
        cmd.args([
            "-v",
            "error",
            "-protocol_whitelist",
            "file,pipe",
            "-show_entries",
            "format=duration:stream=codec_type,width,height",
            "-of",
            "flat",
        ])
        .arg(input);
        let mut probe = Probe::default();
        run_lines(cmd, "ffprobe", limits, &mut |l| probe.line(l)).map_err(|e| {
            TaskError::new(
                codes::INVALID_FILE,
                format!("{name} is not a readable media file: {}", e.message),
            )
        })?;
        probe.check(name, limits)?;
        Ok(probe.duration)
    }

    /// Converts `input` to `out` (`output` format) with the task's options.
    pub fn convert(
        &self,
        input: &Path,
        name: &str,
        out: &Path,
        output: &str,
        o: &EngineOptions,
        limits: &EngineLimits,
    ) -> Result<(), TaskError> {
        let total = self.duration(input, name, limits)?;
        let start = time_option(o, "trim_start")?;
        let end = time_option(o, "trim_end")?;
        let mut cmd = self.base();
        if let Some(s) = &start {
            cmd.args(["-ss", s]);
        }
        decode_limits(&mut cmd, limits);
        cmd.arg("-i").arg(input);
        if total.is_none() && end.is_none() {
            // A length the probe could not tell is held to the limit while decoding.
            cmd.args(["-t", &limits.max_duration.as_secs().to_string()]);
        }
        match (&start, &end) {
            (Some(s), Some(e)) => {
                // -ss before -i resets timestamps: give the length instead of an end.
                let len = seconds(e).unwrap_or(0.0) - seconds(s).unwrap_or(0.0);
                if len <= 0.0 {
                    return Err(bad("trim_end must be after trim_start".into()));
                }
                cmd.args(["-t", &format!("{len:.3}")]);
            }
            (None, Some(e)) => {
                cmd.args(["-to", e]);
            }
            _ => {}
        }
        let (default_video, default_audio) = default_codecs(output);
        let int = |n: &str| o.get(n).and_then(|v| v.as_i64());
        if output == "gif" {
            let w = int("width").map(|w| w.to_string()).unwrap_or_else(|| "-1".into());
            let fps = int("fps").unwrap_or(10);
            cmd.args([
                "-vf",
                &format!("fps={fps},scale={w}:-1:flags=lanczos"),
                "-loop",
                "0",
                "-an",
            ]);
        } else if let Some(dv) = default_video {
            let codec = o.get("video_codec").and_then(|v| v.as_str()).unwrap_or(dv);
            cmd.args(["-c:v", video_encoder(codec)]);
            if codec == "vp9" || codec == "vp8" {
                cmd.args(["-deadline", "realtime", "-cpu-used", "8", "-row-mt", "1"]);
            }
            if codec == "h264" {
                cmd.args(["-preset", "veryfast", "-pix_fmt", "yuv420p"]);
            }
            match (int("width"), int("height")) {
                (Some(w), Some(h)) => cmd.args(["-vf", &format!("scale={w}:{h}")]),
                (Some(w), None) => cmd.args(["-vf", &format!("scale={w}:-2")]),
                (None, Some(h)) => cmd.args(["-vf", &format!("scale=-2:{h}")]),
                (None, None) => &mut cmd,
            };
            if let Some(fps) = int("fps") {
                cmd.args(["-r", &fps.to_string()]);
            }
            if let Some(crf) = int("crf") {
                cmd.args(["-crf", &crf.to_string()]);
                if codec == "vp9" || codec == "vp8" {
                    cmd.args(["-b:v", "0"]);
                }
            }
            if let Some(b) = bitrate_option(o, "video_bitrate")? {
                cmd.args(["-b:v", &b]);
            }
        } else {
            cmd.arg("-vn");
        }
        if output != "gif" {
            let codec = o.get("audio_codec").and_then(|v| v.as_str()).unwrap_or(default_audio);
            cmd.args(["-c:a", audio_encoder(codec)]);
            if let Some(b) = bitrate_option(o, "audio_bitrate")? {
                cmd.args(["-b:a", &b]);
            }
        }
        let muxer = match output {
            "aac" => "adts",
            "m4a" => "ipod",
            "mkv" => "matroska",
            other => other,
        };
        cmd.args(["-f", muxer, "-progress", "pipe:1", "-nostats"]).arg(out);
        let length = match (&start, &end) {
            (_, Some(e)) => seconds(e).map(|e| e - start.as_deref().and_then(seconds).unwrap_or(0.0)),
            (Some(s), None) => total.map(|t| t - seconds(s).unwrap_or(0.0)),
            (None, None) => total,
        };
        let _slot = SLOTS.acquire();
        run_lines(cmd, "ffmpeg", limits, &mut |line| {
            if let (Some(len), Some(us)) = (length, line.strip_prefix("out_time_us=")) {
                if let Ok(us) = us.trim().parse::<f64>() {
                    if len > 0.0 {
                        limits
                            .progress
                            .report(((us / 1e6 / len) * 100.0).clamp(0.0, 99.0) as u8);
                    }
                }
            }
        })
    }

    /// A thumbnail of the frame at `at` seconds (default: 1 s, or the middle of a shorter
    /// video), scaled and encoded by FFmpeg itself: one process, no intermediate image.
    pub fn thumbnail(
        &self,
        input: &Path,
        name: &str,
        at: Option<f64>,
        still: &Still,
        limits: &EngineLimits,
    ) -> Result<(), TaskError> {
        // Probed whatever the time asked: the limits hold for every input.
        let Some(t) = at else {
            let total = self.duration(input, name, limits)?.unwrap_or(0.0);
            return self.frame(input, name, 1.0_f64.min(total / 2.0).max(0.0), still, limits);
        };
        // At a time given, the probe runs beside the frame's extraction (a seek and one
        // frame's decode, under FFmpeg's own pixel limit), and its verdict comes first.
        let (probed, made) = std::thread::scope(|s| {
            let probe = s.spawn(|| self.duration(input, name, limits));
            let made = self.frame(input, name, t, still, limits);
            (probe.join(), made)
        });
        let probed =
            probed.unwrap_or_else(|_| Err(TaskError::new(codes::PROCESSING_FAILED, "ffprobe's reader failed")));
        if let Err(e) = probed {
            let _ = std::fs::remove_file(still.out);
            return Err(e);
        }
        made
    }

    /// The frame at `t` seconds, made as `still` says.
    fn frame(&self, input: &Path, name: &str, t: f64, still: &Still, limits: &EngineLimits) -> Result<(), TaskError> {
        let Still {
            out,
            output,
            size,
            fit,
            quality,
        } = *still;
        let filter = match (fit, size) {
            (_, (None, None)) => None,
            ("crop", (Some(w), Some(h))) => Some(format!(
                "scale={w}:{h}:force_original_aspect_ratio=increase,crop={w}:{h}"
            )),
            ("scale", (Some(w), Some(h))) => Some(format!("scale={w}:{h}")),
            (_, (Some(w), Some(h))) => Some(format!(
                "scale=w='min({w},iw)':h='min({h},ih)':force_original_aspect_ratio=decrease"
            )),
            (_, (Some(w), None)) => Some(format!("scale='min({w},iw)':-1")),
            (_, (None, Some(h))) => Some(format!("scale=-1:'min({h},ih)'")),
        };
        let mut cmd = self.base();
        decode_limits(&mut cmd, limits);
        cmd.args(["-ss", &format!("{t:.3}")])
            .arg("-i")
            .arg(input)
            .args(["-frames:v", "1", "-an"]);
        if let Some(f) = filter {
            cmd.args(["-vf", &f]);
        }
        match output {
            "jpg" => {
                // mjpeg's qscale: 2 (best) to 31.
                let q = 2 + ((100 - quality.clamp(1, 100) as u32) * 29 / 99);
                cmd.args([
                    "-c:v",
                    "mjpeg",
                    "-q:v",
                    &q.to_string(),
                    "-pix_fmt",
                    "yuvj420p",
                    "-f",
                    "image2",
                ]);
            }
            "webp" => {
                cmd.args(["-c:v", "libwebp", "-quality", &quality.to_string(), "-f", "image2"]);
            }
            _ => {
                cmd.args(["-c:v", "png", "-f", "image2"]);
            }
        }
        cmd.arg(out);
        let _slot = SLOTS.acquire();
        run(cmd, "ffmpeg", limits)?;
        if !out.exists() {
            return Err(TaskError::new(
                codes::INVALID_FILE,
                format!("{name} has no video frame at {t:.2} s"),
            ));
        }
        Ok(())
    }
}

/// A video thumbnail's output: the file, its format, the box (`fit` max (never enlarging),
/// crop or scale, as for image thumbnails) and the encoder's quality.
#[derive(Clone, Copy)]
pub struct Still<'a> {
    pub out: &'a Path,
    pub output: &'a str,
    pub size: (Option<u32>, Option<u32>),
    pub fit: &'a str,
    pub quality: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(seconds("90"), Some(90.0));
        assert_eq!(seconds("01:02:03.5"), Some(3723.5));
        let mut o = EngineOptions::new();
        o.insert("trim_start".into(), serde_json::json!("-i /etc/passwd"));
        assert!(time_option(&o, "trim_start").is_err());
        o.insert("audio_bitrate".into(), serde_json::json!("128k"));
        assert_eq!(bitrate_option(&o, "audio_bitrate").unwrap().as_deref(), Some("128k"));
    }
}

/// Input options that hold the decoder itself to the frame limit (a stream may change
/// its size after the header the probe read).
fn decode_limits(cmd: &mut Command, limits: &EngineLimits) {
    cmd.args(["-max_pixels", &limits.max_video_pixels.to_string()]);
}

/// What ffprobe said of a file (its `flat` output).
#[derive(Default, Debug)]
struct Probe {
    duration: Option<f64>,
    /// Per stream index: its type, width and height.
    streams: std::collections::BTreeMap<u32, (String, u64, u64)>,
}

impl Probe {
    fn line(&mut self, line: &str) {
        let Some((key, value)) = line.trim().split_once('=') else {
            return;
        };
        let value = value.trim_matches('"');
        if key == "format.duration" {
            self.duration = value.parse::<f64>().ok().filter(|d| d.is_finite() && *d >= 0.0);
            return;
        }
        let Some(rest) = key.strip_prefix("streams.stream.") else {
            return;
        };
        let Some((index, field)) = rest.split_once('.') else {
            return;
        };
        let Ok(index) = index.parse::<u32>() else { return };
        let entry = self.streams.entry(index).or_default();
        match field {
            "codec_type" => entry.0 = value.to_string(),
            "width" => entry.1 = value.parse().unwrap_or(0),
            "height" => entry.2 = value.parse().unwrap_or(0),
            _ => {}
        }
    }

    fn check(&self, name: &str, limits: &EngineLimits) -> Result<(), TaskError> {
        let media = self
            .streams
            .values()
            .filter(|s| matches!(s.0.as_str(), "audio" | "video"))
            .count();
        if media == 0 {
            return Err(TaskError::new(
                codes::INVALID_FILE,
                format!("{name} has no audio or video stream"),
            ));
        }
        if self.streams.len() > limits.max_streams {
            return Err(TaskError::new(
                codes::LIMIT_EXCEEDED,
                format!(
                    "{name} has {} streams; this server takes at most {}",
                    self.streams.len(),
                    limits.max_streams
                ),
            ));
        }
        for (kind, w, h) in self.streams.values() {
            if kind == "video" && w * h > limits.max_video_pixels {
                return Err(TaskError::new(
                    codes::LIMIT_EXCEEDED,
                    format!(
                        "{name} has {w}x{h} video frames ({} pixels); this server's limit is {} pixels a frame",
                        w * h,
                        limits.max_video_pixels
                    ),
                ));
            }
        }
        if let Some(d) = self.duration {
            if d > limits.max_duration.as_secs_f64() {
                return Err(TaskError::new(
                    codes::LIMIT_EXCEEDED,
                    format!(
                        "{name} lasts {d:.0} s; this server's limit is {} s",
                        limits.max_duration.as_secs()
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod probe_tests {
    use super::*;

    #[test]
    fn reads_ffprobe_flat_output() {
        let mut p = Probe::default();
        for l in [
            "streams.stream.0.codec_type=\"video\"",
            "streams.stream.0.width=2000",
            "streams.stream.0.height=2000",
            "streams.stream.1.codec_type=\"audio\"",
            "format.duration=\"10.000000\"",
        ] {
            p.line(l);
        }
        assert_eq!(p.duration, Some(10.0));
        let limits = EngineLimits {
            max_video_pixels: 1_000_000,
            ..EngineLimits::default()
        };
        let e = p.check("a.mp4", &limits).unwrap_err();
        assert_eq!(e.code, codes::LIMIT_EXCEEDED);
        assert!(e.message.contains("2000x2000"), "{}", e.message);
        assert!(p.check("a.mp4", &EngineLimits::default()).is_ok());
    }
}
