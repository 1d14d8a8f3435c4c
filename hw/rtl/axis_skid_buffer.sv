// SPDX-License-Identifier: Apache-2.0
// AXI4-Stream register slice (skid buffer): registered tready, one beat per clock.
`default_nettype none

// The standard two-register skid buffer (as verilog-axis' axis_register, REG_TYPE=2):
// s_axis_tready is a flip-flop, so no combinational path runs from m_axis_tready back
// to the upstream; a beat that arrives in the cycle m_axis_tready falls is parked in the
// skid register. Only the valid bits are reset; the datapath is not.
module axis_skid_buffer #(
    parameter int WIDTH = 8  // bits carried per beat (TDATA and any sideband, e.g. TLAST)
) (
    input  wire              ap_clk,
    input  wire              ap_rst_n,

    input  wire  [WIDTH-1:0] s_axis_tdata,
    input  wire              s_axis_tvalid,
    output logic             s_axis_tready,

    output logic [WIDTH-1:0] m_axis_tdata,
    output logic             m_axis_tvalid,
    input  wire              m_axis_tready
);

    logic [WIDTH-1:0] skid_data;
    logic             skid_valid;
    logic             m_valid_next, skid_valid_next;
    logic             in_to_out, in_to_skid, skid_to_out;

    // Next cycle can accept a beat: the output drains now, or the skid register stays
    // empty (nothing parked and no beat arriving into a stalled output).
    wire ready_next = m_axis_tready || (!skid_valid && (!m_axis_tvalid || !s_axis_tvalid));

    always_comb begin
        m_valid_next    = m_axis_tvalid;
        skid_valid_next = skid_valid;
        in_to_out       = 1'b0;
        in_to_skid      = 1'b0;
        skid_to_out     = 1'b0;
        if (s_axis_tready) begin
            if (m_axis_tready || !m_axis_tvalid) begin
                m_valid_next = s_axis_tvalid;
                in_to_out    = 1'b1;
            end else begin
                skid_valid_next = s_axis_tvalid;
                in_to_skid      = 1'b1;
            end
        end else if (m_axis_tready) begin
            m_valid_next    = skid_valid;
            skid_valid_next = 1'b0;
            skid_to_out     = 1'b1;
        end
    end

    // control: reset
    always_ff @(posedge ap_clk) begin
        if (!ap_rst_n) begin
            s_axis_tready <= 1'b0;
            m_axis_tvalid <= 1'b0;
            skid_valid    <= 1'b0;
        end else begin
            s_axis_tready <= ready_next;
            m_axis_tvalid <= m_valid_next;
            skid_valid    <= skid_valid_next;
        end
    end

    // datapath: no reset
    always_ff @(posedge ap_clk) begin
        if (in_to_out) begin
            m_axis_tdata <= s_axis_tdata;
        end else if (skid_to_out) begin
            m_axis_tdata <= skid_data;
        end
        if (in_to_skid) begin
            skid_data <= s_axis_tdata;
        end
    end

endmodule

`default_nettype wire
