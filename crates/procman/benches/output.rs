//! Lines per second from 8 pipe writers through `Output`, median of 5 runs.
//!
//! `cargo bench -p procman --bench output`

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::thread;
use std::time::{Duration, Instant};

use procman::output::{ColorChoice, Output, OutputConfig};

const WRITERS: usize = 8;
const LINES: usize = 250_000;
const RUNS: usize = 5;

fn run(logs: bool) -> io::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let config = OutputConfig {
        log_dir: logs.then(|| dir.path().to_path_buf()),
        color: ColorChoice::Never,
    };
    let out = Output::new(config, Box::new(File::create("/dev/null")?), false)?;
    let start = Instant::now();
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let name = format!("worker-{w}");
        out.register(&name)?;
        let (reader, writer) = rustix::pipe::pipe()?;
        readers.push(out.capture(&name, reader));
        writers.push(thread::spawn(move || -> io::Result<()> {
            let mut writer = BufWriter::with_capacity(64 * 1024, File::from(writer));
            for i in 0..LINES {
                writeln!(writer, "{w} request {i} handled in 3ms status=200")?;
            }
            writer.flush()
        }));
    }
    for writer in writers {
        writer
            .join()
            .map_err(|_| io::Error::other("writer panicked"))??;
    }
    let mut total = 0;
    for reader in readers {
        total += reader
            .join()
            .map_err(|_| io::Error::other("reader panicked"))??;
    }
    let elapsed = start.elapsed();
    if total != (WRITERS * LINES) as u64 {
        return Err(io::Error::other(format!("lost lines: {total}")));
    }
    Ok(elapsed)
}

fn main() -> io::Result<()> {
    for logs in [false, true] {
        let mut times = (0..RUNS)
            .map(|_| run(logs))
            .collect::<io::Result<Vec<_>>>()?;
        times.sort();
        let median = times[RUNS / 2];
        let rate = (WRITERS * LINES) as f64 / median.as_secs_f64();
        println!(
            "output: {WRITERS} writers x {LINES} lines, logs={logs}: median {median:?}, {:.0} lines/s",
            rate
        );
    }
    Ok(())
}
