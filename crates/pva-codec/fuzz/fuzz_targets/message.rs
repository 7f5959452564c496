//! Feed arbitrary bytes to a connection's stream decoder and decode every frame it yields as a
//! message, learning operation types from create replies as a client would, so that later
//! data messages in the same input are decoded against them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pva_codec::msg::OpTypeTable;
use pva_codec::{DecodeContext, FrameDecoder, Limits, Message, TypeCache};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_message_size: 1 << 20,
        ..Limits::default()
    };
    let mut frames = FrameDecoder::new(limits.max_message_size);
    // Split the input unevenly to exercise partial reads.
    let cut = data.first().map_or(0, |&b| b as usize).min(data.len());
    frames.extend(&data[..cut]);
    frames.extend(&data[cut..]);
    let mut cache = TypeCache::new();
    let mut ops = OpTypeTable::new();
    while let Ok(Some(frame)) = frames.next_frame() {
        if frame.header.control {
            continue;
        }
        let decoded = Message::decode(
            &frame,
            &mut DecodeContext {
                cache: &mut cache,
                limits: &limits,
                ops: &ops,
            },
        );
        if let Ok(m) = decoded {
            ops.learn(&m);
        }
    }
});
