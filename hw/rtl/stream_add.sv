// SPDX-License-Identifier: Apache-2.0
// AXI4-Stream join: element-wise integer sum of two streams of PE-packed elements (FINN's
// ElementwiseAdd with two streamed inputs, the AddStreams of older FINN versions).
`default_nettype none

// A beat is taken from both inputs at once, when both are valid and the output register
// slice can take the sum (registered readiness: no combinational path from m_axis_tready
// back to the inputs). Element i of a word sits in bits [i*BITS +: BITS], element 0 in
// the least significant bits (FINN's packing); each is sign- or zero-extended as its
// input is signed or not and the sum is OUT_BITS wide, two's complement when signed (the
// output datatype FINN derives for the node always holds the exact sum). Bits of an input
// word above PE*BITS are ignored, those of the output word are zero.
module stream_add #(
    parameter int PE = 1,           // elements per beat
    parameter int A_BITS = 4,       // bits of one element of input a (FINN's lhs, in0)
    parameter bit A_SIGNED = 1'b0,  // input a is two's complement
    parameter int B_BITS = 4,       // bits of one element of input b (FINN's rhs, in1)
    parameter bit B_SIGNED = 1'b0,  // input b is two's complement
    parameter int OUT_BITS = 5,     // bits of one output element (> A_BITS, B_BITS)
    parameter int A_WIDTH = 8,      // TDATA width of input a (>= PE*A_BITS)
    parameter int B_WIDTH = 8,      // TDATA width of input b (>= PE*B_BITS)
    parameter int OUT_WIDTH = 8     // TDATA width of the output (>= PE*OUT_BITS)
) (
    input  wire                  ap_clk,
    input  wire                  ap_rst_n,

    // verilator lint_off UNUSEDSIGNAL
    input  wire  [A_WIDTH-1:0]   s_axis_a_tdata,
    // verilator lint_on UNUSEDSIGNAL
    input  wire                  s_axis_a_tvalid,
    output logic                 s_axis_a_tready,

    // verilator lint_off UNUSEDSIGNAL
    input  wire  [B_WIDTH-1:0]   s_axis_b_tdata,
    // verilator lint_on UNUSEDSIGNAL
    input  wire                  s_axis_b_tvalid,
    output logic                 s_axis_b_tready,

    output logic [OUT_WIDTH-1:0] m_axis_tdata,
    output logic                 m_axis_tvalid,
    input  wire                  m_axis_tready
);

    localparam int SUM_BITS = PE * OUT_BITS;

    logic [OUT_WIDTH-1:0] sum;
    logic                 sum_tready;

    for (genvar i = 0; i < PE; i++) begin : g_elem
        wire [A_BITS-1:0]   a = s_axis_a_tdata[i*A_BITS +: A_BITS];
        wire [B_BITS-1:0]   b = s_axis_b_tdata[i*B_BITS +: B_BITS];
        wire                a_ext = A_SIGNED && a[A_BITS-1];
        wire                b_ext = B_SIGNED && b[B_BITS-1];
        wire [OUT_BITS-1:0] a_wide = {{(OUT_BITS-A_BITS){a_ext}}, a};
        wire [OUT_BITS-1:0] b_wide = {{(OUT_BITS-B_BITS){b_ext}}, b};
        assign sum[i*OUT_BITS +: OUT_BITS] = a_wide + b_wide;
    end
    if (OUT_WIDTH > SUM_BITS) begin : g_pad
        assign sum[OUT_WIDTH-1:SUM_BITS] = '0;
    end

    wire both = s_axis_a_tvalid && s_axis_b_tvalid;
    assign s_axis_a_tready = both && sum_tready;
    assign s_axis_b_tready = both && sum_tready;

    axis_skid_buffer #(.WIDTH(OUT_WIDTH)) u_out (
        .ap_clk(ap_clk), .ap_rst_n(ap_rst_n),
        .s_axis_tdata(sum), .s_axis_tvalid(both), .s_axis_tready(sum_tready),
        .m_axis_tdata(m_axis_tdata), .m_axis_tvalid(m_axis_tvalid),
        .m_axis_tready(m_axis_tready)
    );

endmodule

`default_nettype wire
