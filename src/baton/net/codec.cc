#include "baton/net/codec.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "baton/core/dtype.h"

namespace baton::net {

void ToProto(const std::string& name, const Tensor& tensor, pb::TensorProto* out) {
  out->set_name(name);
  out->set_elem_type(tensor.elem_type());
  for (int64_t d : tensor.shape()) out->add_shape(d);
  if (tensor.elem_type() == dtype::kString) {
    for (const std::string& s : tensor.strings()) out->add_strings(s);
  } else {
    out->set_data(reinterpret_cast<const char*>(tensor.bytes().data()), tensor.byte_size());
  }
}

absl::StatusOr<std::pair<std::string, Tensor>> FromProto(const pb::TensorProto& proto) {
  std::vector<int64_t> shape(proto.shape().begin(), proto.shape().end());
  int64_t elements = 1;
  for (int64_t d : shape) {
    if (d < 0 || (d > 0 && elements > (int64_t{1} << 40) / d)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", proto.name(), "': bad dimension ", d, " in its shape; dimensions must be >= 0"));
    }
    elements *= d;
  }
  if (proto.elem_type() == dtype::kString) {
    if (static_cast<int64_t>(proto.strings_size()) != elements) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", proto.name(), "': ", proto.strings_size(),
                                                     " strings for a shape of ", elements, " elements"));
    }
    return std::make_pair(proto.name(),
                          Tensor::Strings(std::move(shape), {proto.strings().begin(), proto.strings().end()}));
  }
  std::optional<int64_t> size = ElemTypeSize(proto.elem_type());
  if (!size || *size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", proto.name(), "': element type ", proto.elem_type(), " is not supported"));
  }
  if (static_cast<int64_t>(proto.data().size()) != elements * *size) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", proto.name(), "': ", proto.data().size(),
                                                   " bytes of data for ", elements, " elements of ", *size,
                                                   " bytes"));
  }
  Tensor t(proto.elem_type(), std::move(shape));
  if (!proto.data().empty()) std::memcpy(t.bytes().data(), proto.data().data(), proto.data().size());
  return std::make_pair(proto.name(), std::move(t));
}

absl::StatusOr<dispatch::NamedTensors> FromProto(const google::protobuf::RepeatedPtrField<pb::TensorProto>& protos) {
  dispatch::NamedTensors out;
  out.reserve(protos.size());
  for (const pb::TensorProto& p : protos) {
    BATON_ASSIGN_OR_RETURN(auto named, FromProto(p));
    out.push_back(std::move(named));
  }
  return out;
}

Time DeadlineFromBudget(Time arrival, int64_t budget_ns) {
  const int64_t cap = kMaxDeadlineBudget.count();
  const int64_t budget = std::clamp(budget_ns, -cap, cap);
  int64_t at = 0;
  if (__builtin_add_overflow(arrival.time_since_epoch().count(), budget, &at)) {
    at = budget > 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  }
  if (budget <= 0 && at > std::numeric_limits<int64_t>::min()) --at;  // already late: strictly before arrival
  return Time(Duration(at));
}

std::vector<pb::Frame> SplitFrames(const std::string& serialized, int64_t chunk_bytes) {
  std::vector<pb::Frame> frames;
  const size_t step = static_cast<size_t>(std::max<int64_t>(chunk_bytes, 1));
  size_t at = 0;
  do {
    pb::Frame f;
    const size_t n = std::min(step, serialized.size() - at);
    f.set_data(serialized.data() + at, n);
    at += n;
    f.set_last(at >= serialized.size());
    frames.push_back(std::move(f));
  } while (at < serialized.size());
  return frames;
}

namespace {

// A length-delimited field's tag and length, as protobuf writes them.
std::string LengthPrefix(int field, uint64_t length) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.WriteTag(static_cast<uint32_t>(field) << 3 | 2);  // wire type 2: length-delimited
    coded.WriteVarint64(length);
  }
  return out;
}

}  // namespace

TensorFrames::TensorFrames(std::string head, int field, const dispatch::NamedTensors& tensors, int64_t chunk_bytes)
    : step_(static_cast<size_t>(std::max<int64_t>(chunk_bytes, 1))) {
  pieces_.push_back(Piece{std::move(head)});
  for (const auto& [name, tensor] : tensors) {
    // Everything but the raw bytes, then the bytes as TensorProto.data (field 4).
    pb::TensorProto meta;
    meta.set_name(name);
    meta.set_elem_type(tensor.elem_type());
    for (int64_t d : tensor.shape()) meta.add_shape(d);
    size_t data = 0;
    if (tensor.elem_type() == dtype::kString) {
      for (const std::string& s : tensor.strings()) meta.add_strings(s);
    } else {
      data = tensor.byte_size();
    }
    std::string meta_bytes = meta.SerializeAsString();
    const std::string data_prefix = data > 0 ? LengthPrefix(4, data) : std::string();
    Piece p{LengthPrefix(field, meta_bytes.size() + data_prefix.size() + data)};
    p.owned += meta_bytes;
    p.owned += data_prefix;
    pieces_.push_back(std::move(p));
    if (data > 0) pieces_.push_back(Piece{{}, reinterpret_cast<const char*>(tensor.bytes().data()), data});
  }
  for (Piece& p : pieces_) {
    if (p.view == nullptr) p.size = p.owned.size();
    total_ += static_cast<int64_t>(p.size);
  }
}

pb::Frame TensorFrames::Next() {
  pb::Frame frame;
  std::string& data = *frame.mutable_data();
  data.reserve(static_cast<size_t>(std::min<int64_t>(static_cast<int64_t>(step_), total_ - sent_)));
  while (data.size() < step_ && piece_ < pieces_.size()) {
    const Piece& p = pieces_[piece_];
    const size_t n = std::min(step_ - data.size(), p.size - at_);
    data.append((p.view != nullptr ? p.view : p.owned.data()) + at_, n);
    at_ += n;
    if (at_ == p.size) {
      ++piece_;
      at_ = 0;
    }
  }
  sent_ += static_cast<int64_t>(data.size());
  done_ = piece_ == pieces_.size();
  frame.set_last(done_);
  return frame;
}

absl::StatusOr<std::optional<std::string>> FrameReader::Add(const pb::Frame& frame) {
  if (static_cast<int64_t>(buffer_.size() + frame.data().size()) > max_bytes_) {
    buffer_.clear();
    return absl::ResourceExhaustedError(
        absl::StrCat("a framed message is larger than the limit of ", max_bytes_, " bytes"));
  }
  buffer_.append(frame.data());
  if (!frame.last()) return std::optional<std::string>();
  std::string whole;
  whole.swap(buffer_);
  return std::optional<std::string>(std::move(whole));
}

void ToProto(const AgentPuInfo& info, pb::PuInfo* out) {
  out->set_name(info.name);
  out->set_kind(info.kind);
  out->set_threads(info.threads);
  out->set_speed(info.speed);
  for (const auto& [op, speed] : info.op_speed) (*out->mutable_op_speed())[op] = speed;
  for (const std::string& op : info.unsupported_ops) out->add_unsupported_ops(op);
  out->set_compute(info.compute);
}

AgentPuInfo FromProto(const pb::PuInfo& proto) {
  AgentPuInfo info;
  info.name = proto.name();
  info.kind = proto.kind();
  info.threads = proto.threads();
  info.speed = proto.speed();
  for (const auto& [op, speed] : proto.op_speed()) info.op_speed[op] = speed;
  info.unsupported_ops.assign(proto.unsupported_ops().begin(), proto.unsupported_ops().end());
  info.compute = proto.compute();
  return info;
}

AgentHello FromProto(const pb::HelloReply& proto) {
  AgentHello hello;
  hello.name = proto.name();
  hello.version = proto.version();
  for (const pb::PuInfo& pu : proto.pus()) hello.pus.push_back(FromProto(pu));
  hello.max_partition_bytes = proto.max_partition_bytes();
  hello.chunk_bytes = proto.chunk_bytes();
  hello.instance = proto.instance();
  hello.load_timeout_ms = proto.load_timeout_ms();
  return hello;
}

}  // namespace baton::net
